"""Content-defined chunking (FastCDC 2020 via pyfastcdc), hashing each chunk as it is cut.

Average chunk size 64 KiB (pyfastcdc's effective average is avg + min, about 80 KiB): small enough
that an insert in the middle of a file costs one or two chunks (see docs/benchmarks.md, workload 7),
large enough that a 1 MiB FUSE read touches a handful of chunks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

from .backend import Obj, plain_chunk

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 256 * 1024

THREAD_MIN_SIZE = 4 << 20   # files at least this big are chunked in a helper thread
AHEAD_BYTES = 32 << 20      # how far that thread may run ahead of the caller
GROUP_BYTES = 1 << 20       # it hands chunks over in groups this big


def _cdc() -> FastCDC:
    return FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)


def chunk_fd(fd: int) -> Iterator[memoryview]:
    """Split an open file, read from its current offset to EOF, into content-defined chunks.

    Each view is valid only until the next chunk is produced. Reading (rather than mapping) keeps
    a file truncated underneath us from killing the process with SIGBUS.
    """
    with open(fd, "rb", buffering=0, closefd=False) as stream:
        for chunk in _cdc().cut_stream(stream):
            yield chunk.data


def hashed_chunks(fd: int, size: int, make=plain_chunk, ahead: int = AHEAD_BYTES) -> Iterator[tuple[Obj, int]]:
    """(object, length) of each chunk of an open file of ``size`` bytes: ``make(bytes)`` is the
    object the store's ``put_many`` takes (store/backend.py chunk_maker; by default a plain
    store's: id, SHA-256 digest, the bytes), the length is that of the chunk's bytes (a sealed
    store's object holds more: store/sealed.py seal_chunk).

    For big files this runs in two helper threads, one cutting the chunks (``artfs-chunker``),
    one making their objects (``artfs-chunk-maker``: hashing, or hashing and sealing); cutting,
    hashing and sealing release the GIL, so on two cores the two overlap with each other and with
    the caller storing the previous chunks. The caller stores in batches, each ending in a
    transaction commit that waits for the disk, so the helpers may run up to ``ahead`` bytes ahead
    (a batch's worth: they keep cutting and making the next batch during that wait, on both
    cores). Chunks are handed over in groups of GROUP_BYTES: a hand-off wakes the other thread,
    which on a VM costs about as much as hashing a chunk. Small files are done inline, where a
    thread would cost more than it saves.
    """
    if size < THREAD_MIN_SIZE:
        for view in chunk_fd(fd):
            data = bytes(view)
            yield make(data), len(data)
        return
    cut: queue.SimpleQueue = queue.SimpleQueue()   # groups of bytes, to make
    q: queue.SimpleQueue = queue.SimpleQueue()     # groups of (object, length), to take
    room = threading.Condition()
    queued = [0]   # bytes handed over and not yet taken
    stop = threading.Event()

    def hand(group: list, n: int) -> bool:
        with room:
            while queued[0] >= ahead and not stop.is_set():
                room.wait()
            if stop.is_set():
                return False
            queued[0] += n
        cut.put((group, n))
        return True

    def produce():
        try:
            group, n = [], 0
            for view in chunk_fd(fd):
                group.append(bytes(view))
                n += len(group[-1])
                if n >= GROUP_BYTES:
                    if not hand(group, n):
                        return
                    group, n = [], 0
            if group:
                hand(group, n)
        except BaseException as e:  # passed on to the consumer, raised there
            cut.put(e)
        finally:
            cut.put(None)

    def make_groups():
        try:
            while (item := cut.get()) is not None:
                if not isinstance(item, BaseException) and not stop.is_set():   # else: passed on
                    group, n = item
                    item = [(make(data), len(data)) for data in group], n
                q.put(item)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)
            while cut.get() is not None:   # until the cutting thread ends (the consumer stops it)
                pass
        finally:
            q.put(None)

    workers = [threading.Thread(target=produce, name="artfs-chunker", daemon=True),
               threading.Thread(target=make_groups, name="artfs-chunk-maker", daemon=True)]
    for worker in workers:
        worker.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            group, n = item
            with room:
                queued[0] -= n
                room.notify()
            yield from group
    finally:
        with room:
            stop.set()
            room.notify()
        for worker in workers:
            worker.join()
