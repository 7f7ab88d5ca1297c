"""The chunking thread of a big file's ingest (store/chunker.py hashed_chunks) runs one ingest
batch ahead of its caller, no more: while the caller stores a batch (an LMDB commit that waits for
the disk), the next one is cut and hashed meanwhile, and memory stays bounded."""

from __future__ import annotations

import os
import time

from artfs.repo.ingest import BATCH_BYTES
from artfs.store.chunker import AHEAD_BYTES, GROUP_BYTES, MAX_SIZE, hashed_chunks
from tests.helpers import MiB


def offset(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_CUR)


def settled_offset(fd: int, what: str, timeout: float = 120.0) -> int:
    """How far the chunking thread read FD once it stopped reading (unchanged for 0.5 s)."""
    deadline, last = time.monotonic() + timeout, -1
    while (now := offset(fd)) != last:
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        last = now
        time.sleep(0.5)
    return now


def test_the_chunking_thread_runs_one_batch_ahead_and_no_more(tmp_path):
    assert AHEAD_BYTES >= BATCH_BYTES   # a whole batch is cut while the previous one is stored
    size = AHEAD_BYTES + 32 * MiB
    path = tmp_path / "big"
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = hashed_chunks(fd, size)
        held = next(chunks)[1]   # the caller is now "storing" it and takes nothing more
        read = settled_offset(fd, "the chunking thread stopped reading")
        # it cut a batch's worth beyond the chunk the caller holds (before: 64 chunks, ~5 MiB)...
        assert read >= AHEAD_BYTES, f"ran {read / MiB:.1f} MiB ahead"
        # ...and stopped there: plus the group the caller took, the group that crossed the bound
        # and the one it was making, each up to a chunk more, and its reader's buffer
        bound = AHEAD_BYTES + 3 * (GROUP_BYTES + MAX_SIZE) + 2 * MAX_SIZE
        assert read <= bound, f"ran {read / MiB:.1f} MiB ahead"
        total = held + sum(n for _, n in chunks)
        assert total == size
    finally:
        os.close(fd)
