"""artfs: versioned datasets and models (artifacts) in a content-addressed store, as a filesystem."""

import sys

# Trees are walked recursively; a 4095-byte path can be 2048 directories deep.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 12_000))

from .api.store import Store, Version  # noqa: E402
from .errors import ArtfsError  # noqa: E402

__all__ = ["Store", "Version", "ArtfsError"]
__version__ = "0.1.0"
