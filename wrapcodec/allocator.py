"""The C allocator's settings for a process that makes and frees large arrays all the time.

Training steps, content adaptation and post-processing make tensors of tens to hundreds of
megabytes and free them again, many times a second. glibc's malloc serves a block that large
with its own ``mmap`` and gives it back with ``munmap`` when freed, so every step faults in
(and the kernel zeroes) the same memory again: on two cores, training the codec simulator
spent as much time in the kernel as in its own arithmetic. :func:`keep_freed_memory` raises
the size above which malloc maps blocks of their own, and the free space at the top of the
heap it keeps rather than returns, so freed blocks are reused. Freed memory then stays with
the process until :func:`wrapcodec.workers.release_memory` trims the heap (the encoder does
after each segment, so memory stays flat over a long clip) or the process exits.

Imports nothing but the standard library: the entry point calls it before anything heavy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE = 1 << 30
"""1 GiB: blocks up to this come from the heap, and up to this much free heap is kept."""


def libc() -> ctypes.CDLL:
    """The C library (its functions raise AttributeError where it lacks them)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (module docstring); False, changing nothing, elsewhere (another
    C library or system) or where glibc refuses them."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = libc().mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE)) and bool(mallopt(M_TRIM_THRESHOLD, LARGE))
