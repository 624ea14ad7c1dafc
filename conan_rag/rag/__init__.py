"""The reference RAG application on top of the encoder core: import its public names from here.

Documents (``sources``) are cut into chunks (``chunking``), written through one sink into a
vector store (``ingest``, ``store``: Chroma), retrieved by exact cosine, BM25 or both
(``search``) and answered with citations (``answer``); :class:`Pipeline` is the facade. Needs
the ``rag`` extra: ``pip install 'conan-rag[rag]'``. Names load on first use, so importing the
package is light.

Example:
    >>> from conan_rag.rag import RetrievalOptions
    >>> RetrievalOptions(k=3).k
    3
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Pipeline": "conan_rag.rag.pipeline",
    "MODEL_ENV": "conan_rag.rag.pipeline",
    "collection_info": "conan_rag.rag.pipeline",
    "Answer": "conan_rag.rag.answer",
    "RetrievalOptions": "conan_rag.rag.search.retrieval",
    "Hit": "conan_rag.rag.search.retrieval",
    "RETRIEVAL_MODES": "conan_rag.rag.search.retrieval",
    "ServedCollection": "conan_rag.rag.search.served",
    "IngestReport": "conan_rag.rag.ingest",
    "IngestInterrupted": "conan_rag.rag.ingest",
    "ProgressEvent": "conan_rag.rag.ingest",
    "Document": "conan_rag.rag.sources",
    "DocumentLike": "conan_rag.rag.sources",
    "load_paths": "conan_rag.rag.sources",
    "ChunkConfig": "conan_rag.rag.chunking",
    "Chunk": "conan_rag.rag.chunking",
    "Chunker": "conan_rag.rag.chunking",
    "RayEngine": "conan_rag.rag.ingest",
    "LocalEngine": "conan_rag.rag.ingest",
    "load_export": "conan_rag.rag.ingest",
    "open_client": "conan_rag.rag.store",
    "lexical_tokens": "conan_rag.rag.search.tokens",
    "BeirData": "conan_rag.rag.evaluation",
    "beir_documents": "conan_rag.rag.evaluation",
    "beir_run": "conan_rag.rag.evaluation",
    "evaluate": "conan_rag.rag.evaluation",
    "evaluation": "conan_rag.rag.evaluation",
}
__all__ = [
    "MODEL_ENV",
    "RETRIEVAL_MODES",
    "Answer",
    "BeirData",
    "Chunk",
    "ChunkConfig",
    "Chunker",
    "Document",
    "DocumentLike",
    "Hit",
    "IngestInterrupted",
    "IngestReport",
    "LocalEngine",
    "Pipeline",
    "ProgressEvent",
    "RayEngine",
    "RetrievalOptions",
    "ServedCollection",
    "beir_documents",
    "beir_run",
    "collection_info",
    "evaluate",
    "evaluation",
    "lexical_tokens",
    "load_export",
    "load_paths",
    "open_client",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conan_rag.rag' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    return loaded if module.endswith("." + name) else getattr(loaded, name)


def __dir__() -> list[str]:
    return __all__
