"""Progress bars of the CLI: a rich bar on a terminal, a no-op callback otherwise."""

from __future__ import annotations

import os
import stat
import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, total: int | None):
    """A rich progress bar on a terminal; a no-op callback otherwise."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)
    from rich.console import Console
    columns = [description, BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def input_bytes(path: str) -> int:
    """Total size of the regular files under PATH (or of PATH itself): the total of put's bar.

    Only a bar's estimate: what cannot be read is left out (put itself reports the error), and
    the walk keeps its own stack, so any depth works.
    """
    try:
        st = os.stat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total, todo = 0, [path]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total
