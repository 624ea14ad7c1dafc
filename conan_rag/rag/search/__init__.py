"""The search room: dense, lexical (BM25) and hybrid retrieval over a vector store.

It talks to the store only through :class:`~conan_rag.rag.store.protocol.VectorStore`.

* :mod:`~conan_rag.rag.search.retrieval`: :class:`RetrievalOptions`, :class:`Hit`,
  :func:`retrieve_many`.
* :mod:`~conan_rag.rag.search.exact`: exact cosine re-scoring, threshold and MMR from the
  stored vectors (the cross-encoder that *reranks* is :mod:`conan_rag.reranking`).
* :mod:`~conan_rag.rag.search.fusion`: reciprocal-rank fusion of the dense and lexical lists.
* :mod:`~conan_rag.rag.search.tokens`: :func:`lexical_tokens` (Chinese and English words).
* :mod:`~conan_rag.rag.search.lexical_index`: :class:`LexicalIndex`, BM25 kept in step with
  the store.
* :mod:`~conan_rag.rag.search.served`: :class:`ServedCollection`, the collection a
  ``conan-rag serve --collection`` server searches, with the pipeline's ``retrieve``.

Example:
    >>> from conan_rag.rag.search import RetrievalOptions, rrf
    >>> RetrievalOptions(retrieval="hybrid").replace(k=2).k, rrf([["a"]], [1.0])[0][0]
    (2, 'a')
"""

from __future__ import annotations

from conan_rag.rag.search.exact import cosine_scores, mmr, order_by_score
from conan_rag.rag.search.fusion import rrf
from conan_rag.rag.search.lexical_index import LexicalIndex, SyncReport, lexical_text
from conan_rag.rag.search.retrieval import (
    RETRIEVAL_MODES,
    Hit,
    RetrievalOptions,
    check_query,
    retrieve_many,
)
from conan_rag.rag.search.served import ServedCollection
from conan_rag.rag.search.tokens import TOKENIZER_VERSION, lexical_tokens, lexical_tokens_many

__all__ = [
    "RETRIEVAL_MODES",
    "TOKENIZER_VERSION",
    "Hit",
    "LexicalIndex",
    "RetrievalOptions",
    "ServedCollection",
    "SyncReport",
    "check_query",
    "cosine_scores",
    "lexical_text",
    "lexical_tokens",
    "lexical_tokens_many",
    "mmr",
    "order_by_score",
    "retrieve_many",
    "rrf",
]
