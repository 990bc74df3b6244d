"""Giving the memory an encode call freed back to the operating system.

A batch of passages allocates activation tensors of a shape set by the batch's token lengths
(an e5 attention matrix for 32 chunks of 512 tokens is ~400 MB). glibc's allocator keeps most
of that memory once it is freed, and with shapes that vary from batch to batch its heap
fragments: a worker's resident memory climbs by hundreds of megabytes over a backfill although
nothing stays alive.
``malloc_trim(0)`` hands the free pages back after each batch; measured in the README.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on other C libraries (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; False where that is not possible.

    Called by the indexer after each batch's encode calls (milliseconds; a batch takes seconds).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
