"""The Python API: ``artfs.Store`` and ``artfs.Version``."""
