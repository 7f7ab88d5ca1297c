"""The chunking thread of a big file's ingest (store/chunker.py hashed_chunks) runs one ingest
batch ahead of its caller, no more: while the caller stores a batch (an LMDB commit that waits for
the disk), the next one is cut and hashed meanwhile, and memory stays bounded."""

from __future__ import annotations

import os
import threading
import time

import pytest

from artfs.repo.ingest import BATCH_BYTES
from artfs.store.chunker import AHEAD_BYTES, GROUP_BYTES, MAX_SIZE, THREAD_MIN_SIZE, hashed_chunks, plain_chunk
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


def chunking_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("artfs-chunker", "artfs-chunk-maker")]


def test_the_chunks_are_cut_and_made_in_two_threads_that_end_with_the_caller(tmp_path):
    """A big file's chunks are cut in one thread and their objects made in another (both cores),
    each exactly once and in order; an error making one reaches the caller, and a caller that
    stops early or fails ends both threads."""
    data = os.urandom(THREAD_MIN_SIZE * 3)
    path = tmp_path / "big"
    path.write_bytes(data)
    where, made = set(), []

    def make(chunk):
        where.add(threading.current_thread().name)
        made.append(len(chunk))
        return plain_chunk(chunk)

    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = list(hashed_chunks(fd, len(data), make))
        assert where == {"artfs-chunk-maker"}
        assert made == [n for _, n in chunks] and sum(made) == len(data)
        assert b"".join(obj.data for obj, _ in chunks) == data
        assert chunking_threads() == []

        def failing(chunk):
            if len(made) > 20:
                raise ValueError("no room")
            return make(chunk)
        made.clear()
        os.lseek(fd, 0, os.SEEK_SET)
        with pytest.raises(ValueError, match="no room"):
            for _ in hashed_chunks(fd, len(data), failing):
                pass
        assert chunking_threads() == []
        os.lseek(fd, 0, os.SEEK_SET)
        taken = hashed_chunks(fd, len(data), make)
        next(taken)
        taken.close()
        assert chunking_threads() == []
    finally:
        os.close(fd)
