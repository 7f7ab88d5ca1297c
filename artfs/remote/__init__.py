"""Remotes: a store's versions shared through an S3-compatible bucket (docs/REMOTE.md)."""
