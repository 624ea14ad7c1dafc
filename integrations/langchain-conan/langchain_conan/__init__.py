"""LangChain integration for conan-rag: Conan-embedding-v1 embeddings on one shared encoder.

Example:
    >>> from langchain_conan import ConanEmbeddings
    >>> emb = ConanEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.embed_documents(["a cat", "a dog"]))
    2
"""

from __future__ import annotations

from langchain_conan.embeddings import ConanEmbeddings
from langchain_conan.retrievers import ConanRetriever

__all__ = [
    "ConanEmbeddings",
    "ConanRetriever",
]
