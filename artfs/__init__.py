"""artfs: versioned datasets and models (artifacts) in a content-addressed store, as a filesystem."""

from .api.store import Store, Version
from .errors import ArtfsError

__all__ = ["Store", "Version", "ArtfsError"]
__version__ = "0.1.0"   # the one source: pyproject.toml reads it (dynamic), `artfs --version` prints it
