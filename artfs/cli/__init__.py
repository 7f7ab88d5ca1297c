"""The command line: arguments, output, progress bars and exit codes, over the public API."""

from .main import main

__all__ = ["main"]
