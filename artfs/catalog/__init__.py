"""Artifacts, versions, aliases, the audit log, reference counts, ingest sessions and the staging index (LMDB)."""
