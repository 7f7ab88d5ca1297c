"""Buffers for bytes every one of which is written before it is read."""

import ctypes

_new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_new_bytearray.restype, _new_bytearray.argtypes = ctypes.py_object, (ctypes.c_char_p, ctypes.c_ssize_t)


def unfilled(size: int) -> bytearray:
    """A new bytearray of SIZE bytes, not zeroed (CPython's ``PyByteArray_FromStringAndSize``
    without a source): for a buffer every byte of which is written before it is read (a read's
    reply, a plaintext opened into it; ``bytearray(size)`` would write each byte twice, the
    first time to memory not in the CPU's caches)."""
    return _new_bytearray(None, size)
