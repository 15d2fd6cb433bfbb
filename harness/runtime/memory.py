"""Process-level memory settings that make CPU training steps faster.

Each step frees and re-allocates gradients of the size of the word-embedding matrix (47 MB for a
MiniLM vocabulary; 200 MB for RoBERTa-large). glibc serves blocks above 32 MB with mmap and
returns them with munmap, so every step page-faults that memory back in and zero-fills it
(`aten::fill_` was 13% of a step in the profile). Telling malloc to keep freed memory in the heap
lets the next step reuse warm pages: 65 → 52 ms per step for paraphrase-MiniLM-L3-v2 at batch 16
(see `harness bench`, "without malloc tuning"). The arithmetic is unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_MAX = -4
DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}  # glibc's own defaults
TUNED = {M_TRIM_THRESHOLD: 2**31 - 1, M_MMAP_MAX: 0}  # never trim, never mmap


def keep_freed_memory(enable: bool = True) -> bool:
    """Switch glibc malloc to heap-only allocation that is not trimmed (or back to its defaults).
    Returns True if applied; False where there is no glibc (the setting is then simply absent)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return all(libc.mallopt(param, ctypes.c_int(value)) == 1
                   for param, value in (TUNED if enable else DEFAULTS).items())
    except (OSError, AttributeError):
        return False
