"""Cross-encoder reranking: any sentence-transformers ``CrossEncoder`` folder on plain torch.

:func:`load_reranker` shares one :class:`Reranker` per model, device, dtype and settings in a
process; its scores equal ``sentence_transformers.CrossEncoder(folder).predict``. Importing this
package is light: torch and transformers load with the first :func:`load_reranker`.

Example:
    >>> import tempfile
    >>> from conan_rag.reranking import load_reranker
    >>> from conan_rag.testing import build_cross_encoder
    >>> reranker = load_reranker(build_cross_encoder(tempfile.mkdtemp(), n_cjk=100), device="cpu")
    >>> reranker.num_labels, reranker.activation  # sigmoid: CrossEncoder's default for 1 label
    (1, 'sigmoid')
    >>> ranked = reranker.rank("a cat", ["the dog", "a cat"])  # [(index, score), ...]
    >>> sorted(index for index, _ in ranked)
    [0, 1]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conan_rag.reranking.config import DEFAULT_RERANKER, RerankerConfig

if TYPE_CHECKING:
    from conan_rag.reranking.registry import clear_rerankers, load_reranker
    from conan_rag.reranking.reranker import Reranker

__all__ = ["DEFAULT_RERANKER", "Reranker", "RerankerConfig", "clear_rerankers", "load_reranker"]


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts on first use."""
    if name in ("load_reranker", "clear_rerankers"):
        from conan_rag.reranking import registry

        return getattr(registry, name)
    if name == "Reranker":
        from conan_rag.reranking.reranker import Reranker

        return Reranker
    raise AttributeError(f"module 'conan_rag.reranking' has no attribute {name!r}")
