"""LlamaIndex embeddings for conan-rag: Conan-embedding-v1 on one shared encoder.

Example:
    >>> from llama_index.embeddings.conan import ConanEmbedding
    >>> emb = ConanEmbedding(model_name="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> len(emb.get_query_embedding("hello"))
    384
"""

from __future__ import annotations

from llama_index.embeddings.conan.base import ConanEmbedding

__all__ = ["ConanEmbedding"]
