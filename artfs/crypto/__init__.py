"""Encryption at rest: the store's master key (keyfile.py), where its secret comes from
(keyring.py), keyed ids and sealing objects (seal.py). Only audited primitives from
``cryptography`` (AES-256-GCM, Argon2id, HKDF) and the standard library's HMAC; no hand-written
cryptography. See docs/ARCHITECTURE.md, "Encryption at rest"."""
