"""LangChain integration for conan-rag: Conan-embedding-v1 embeddings on one shared encoder.

``ConanEmbeddings`` needs only the encoder core; ``ConanReranker`` (a document compressor on the
shared cross-encoder) and ``ConanRetriever`` are imported on first use, and the retriever needs
the RAG extra (``pip install 'langchain-conan[rag]'``), so embedding never pulls in a vector store.

Example:
    >>> from langchain_conan import ConanEmbeddings
    >>> emb = ConanEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.embed_documents(["a cat", "a dog"]))
    2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_conan.embeddings import ConanEmbeddings

if TYPE_CHECKING:
    from langchain_conan.rerankers import ConanReranker
    from langchain_conan.retrievers import ConanRetriever

__all__ = [
    "ConanEmbeddings",
    "ConanReranker",
    "ConanRetriever",
]


def __getattr__(name: str) -> Any:
    if name == "ConanRetriever":
        from langchain_conan.retrievers import ConanRetriever

        return ConanRetriever
    if name == "ConanReranker":
        from langchain_conan.rerankers import ConanReranker

        return ConanReranker
    raise AttributeError(f"module 'langchain_conan' has no attribute {name!r}")
