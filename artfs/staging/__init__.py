"""Staging: the writable copy-on-write overlay of an artifact's latest version, and commit."""
