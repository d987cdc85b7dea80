"""The search driver's memory allocator: freed large blocks go back to the system.

Each proposal fits a Gaussian process on every trial so far; its tensors grow with the study and are freed after
each proposal. glibc raises its mmap threshold whenever a large mmapped block is freed, so that later large blocks
are carved from the heap instead, where freed space fragments and the resident size keeps growing (about 0.7 MB a
trial here: ``bench/long_search.py``). Fixing the threshold keeps every block above it mmapped, returned on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (``malloc.h``): the free space at the heap's top that is given back, the size from
which blocks are mmapped."""

THRESHOLD_BYTES = 128 * 1024
"""glibc's initial thresholds, kept fixed. Both are raised together as large blocks are freed (the trim threshold to
twice the mmap threshold), which the imports before a search already do: both are set back."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name)
    except (OSError, TypeError):
        return None


def release_free_memory() -> bool:
    """Give the free pages inside the heap back to the system (glibc's ``malloc_trim``), after each trial: what the
    fixed thresholds leave (blocks under them, freed between ones still in use) would otherwise stay resident.

    Returns:
        Whether memory was given back (false on other C libraries, where nothing is done).
    """
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def keep_large_blocks_mmapped() -> bool:
    """Fix glibc's mmap and trim thresholds in this process (not on other C libraries, where nothing changes).

    Returns:
        Whether the threshold was set (false where the C library is not glibc; said once at debug level).
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        logger.debug("no glibc mallopt here: the allocator is left as it is")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES))
