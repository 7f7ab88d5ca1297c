"""Bytes at rest: the chunker, content ids, the object-store interface and its backends."""
