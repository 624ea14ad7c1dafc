"""Give freed heap memory back to the operating system.

glibc's allocator keeps memory that many threads (tokenizer, torch, Chroma) free in varied sizes
as fragments of its arenas, so a long ingest's resident memory creeps up although little is in
use: ``python benchmarks/ingest_memory.py --mb 5 20`` peaked at 1,106 MB and 1,375 MB before
the ingest trimmed after every written group, 934 MB and 1,198 MB after. ``malloc_trim`` returns
those fragments; where the C library has no such call (macOS, musl) this does nothing.

Example:
    >>> release_free_memory() in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - a platform without dlopen(NULL)
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Return freed heap memory to the system (glibc's ``malloc_trim(0)``).

    Returns:
        Whether the C library could trim (not whether memory was released).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
