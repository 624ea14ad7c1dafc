"""conan-rag: Conan-embedding-v1 (and any sentence-transformers folder) for RAG, fast and exact.

The public API of the encoder core. The RAG application lives in :mod:`conan_rag.rag`
(``pip install 'conan-rag[rag]'``), the Chroma embedding function in :mod:`conan_rag.chroma`.
Importing the package is light: torch and transformers load with the first
:func:`load_encoder` (or the first use of :class:`Encoder`), so adapters import fast.

Example:
    >>> import conan_rag
    >>> enc = conan_rag.load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> enc.encode(["hello"]).shape
    (1, 384)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conan_rag.config import EncoderConfig
from conan_rag.errors import (
    CollectionMismatchError,
    ConanConfigError,
    ConanInputError,
    ConanModelError,
    ConanRagError,
    ConanTypeError,
    ForkedProcessError,
    ModelNotFoundError,
    QueueWorkerError,
)
from conan_rag.model.files import BUNDLED_MINILM, DEFAULT_MODEL

if TYPE_CHECKING:
    from conan_rag.encoder import Encoder
    from conan_rag.registry import load_encoder

__all__ = [
    "BUNDLED_MINILM",
    "DEFAULT_MODEL",
    "CollectionMismatchError",
    "ConanConfigError",
    "ConanInputError",
    "ConanModelError",
    "ConanRagError",
    "ConanTypeError",
    "Encoder",
    "EncoderConfig",
    "ForkedProcessError",
    "ModelNotFoundError",
    "QueueWorkerError",
    "load_encoder",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts on first use."""
    if name == "Encoder":
        from conan_rag.encoder import Encoder

        return Encoder
    if name == "load_encoder":
        from conan_rag.registry import load_encoder

        return load_encoder
    raise AttributeError(f"module 'conan_rag' has no attribute {name!r}")
