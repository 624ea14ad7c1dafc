"""Give freed heap memory back to the operating system.

glibc's allocator keeps memory that many threads (tokenizer, torch, Chroma) free in varied sizes
as fragments of its arenas, so a long ingest's resident memory creeps up although little is in
use: a 5 MB file measured 1.28 GB peak RSS without trimming and 0.72 GB with a trim after every
written group (tiny Conan-layout model, the same run otherwise). ``malloc_trim`` returns those
fragments; where the C library has no such call (macOS, musl) this does nothing.

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
