"""conan-rag: Conan-embedding-v1 (and any sentence-transformers folder) for RAG, fast and exact.

Example:
    >>> import conan_rag
    >>> enc = conan_rag.load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> enc.encode(["hello"]).shape
    (1, 384)
"""

from __future__ import annotations

from conan_rag.config import EncoderConfig
from conan_rag.encoder import Encoder, load_encoder
from conan_rag.errors import (
    CollectionMismatchError,
    ConanConfigError,
    ConanModelError,
    ConanRagError,
)
from conan_rag.model_files import BUNDLED_MINILM, DEFAULT_MODEL

__all__ = [
    "BUNDLED_MINILM",
    "DEFAULT_MODEL",
    "CollectionMismatchError",
    "ConanConfigError",
    "ConanModelError",
    "ConanRagError",
    "Encoder",
    "EncoderConfig",
    "load_encoder",
]
__version__ = "0.1.0"
