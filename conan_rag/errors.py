"""One exception family for conan-rag; every message names the problem and the fix.

Example:
    >>> from conan_rag.errors import ConanModelError, ConanRagError
    >>> issubclass(ConanModelError, ConanRagError)
    True
"""

from __future__ import annotations

DOWNLOAD_HINT = (
    "Download the model once with `huggingface-cli download TencentBAC/Conan-embedding-v1` "
    "(or `hf download TencentBAC/Conan-embedding-v1`), or pass the path of a local "
    "sentence-transformers folder."
)


class ConanRagError(Exception):
    """Base class of every error conan-rag raises on purpose."""


class ConanModelError(ConanRagError, ValueError):
    """A model folder is missing, incomplete, corrupt or inconsistent."""


class ConanConfigError(ConanRagError, ValueError):
    """A setting has a value that is not one of the valid choices."""


class CollectionMismatchError(ConanRagError, ValueError):
    """A vector collection was built by another encoder than the one opening it."""
