"""conan-rag: Conan-embedding-v1 (and any sentence-transformers folder) for RAG, fast and exact.

The public API of the encoder core. The RAG application lives in :mod:`conan_rag.rag`
(``pip install 'conan-rag[rag]'``), the Chroma embedding function in :mod:`conan_rag.chroma`.
The cross-encoder reranker sits beside the encoder: :func:`load_reranker` and :class:`Reranker`
share the registry, runtime and batching queue. Importing the package is light: torch and
transformers load with the first :func:`load_encoder` or :func:`load_reranker` (or the first
use of :class:`Encoder`, :class:`Reranker`), so adapters import fast.

Example:
    >>> import conan_rag
    >>> enc = conan_rag.load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> enc.encode(["hello"]).shape
    (1, 384)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conan_rag.config import EncoderConfig, RerankerConfig
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
from conan_rag.inputs import Kind
from conan_rag.model.files import BUNDLED_MINILM, DEFAULT_MODEL, DEFAULT_RERANKER
from conan_rag.protocols import EncoderLike

if TYPE_CHECKING:
    from conan_rag.encoder import Encoder
    from conan_rag.registry import load_encoder, loaded_backends
    from conan_rag.reranking.registry import load_reranker
    from conan_rag.reranking.reranker import Reranker

__all__ = [
    "BUNDLED_MINILM",
    "DEFAULT_MODEL",
    "DEFAULT_RERANKER",
    "CollectionMismatchError",
    "ConanConfigError",
    "ConanInputError",
    "ConanModelError",
    "ConanRagError",
    "ConanTypeError",
    "Encoder",
    "EncoderConfig",
    "EncoderLike",
    "ForkedProcessError",
    "Kind",
    "ModelNotFoundError",
    "QueueWorkerError",
    "Reranker",
    "RerankerConfig",
    "load_encoder",
    "load_reranker",
    "loaded_backends",
]
__version__ = "0.2.0"


# Names whose modules import torch: loaded on first use (module, attribute).
_LAZY: dict[str, str] = {
    "Encoder": "conan_rag.encoder",
    "Reranker": "conan_rag.reranking.reranker",
    "load_encoder": "conan_rag.registry",
    "load_reranker": "conan_rag.reranking.registry",
    "loaded_backends": "conan_rag.registry",
}


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conan_rag' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
