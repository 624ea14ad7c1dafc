"""The RAG pipeline's public names, kept here for ``from conan_rag.pipeline import Pipeline``.

The implementation lives in :mod:`conan_rag.rag` (``pip install 'conan-rag[rag]'``).

Example:
    >>> from conan_rag.pipeline import Pipeline, RetrievalOptions
    >>> RetrievalOptions(k=3).k
    3
"""

from __future__ import annotations

from conan_rag.rag.answer import Answer
from conan_rag.rag.ingest.report import IngestInterrupted, IngestReport
from conan_rag.rag.pipeline import MODEL_ENV, Pipeline
from conan_rag.rag.search.retrieval import Hit, RetrievalOptions

__all__ = [
    "MODEL_ENV",
    "Answer",
    "Hit",
    "IngestInterrupted",
    "IngestReport",
    "Pipeline",
    "RetrievalOptions",
]
