"""LlamaIndex retriever for conan-rag: dense, lexical (BM25) or hybrid search over a Pipeline.

Needs the RAG extra (``pip install 'conan-rag[rag]'``).

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag import Document, Pipeline
    >>> from llama_index.retrievers.conan import ConanRetriever
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> pipe = Pipeline(enc, db=tempfile.mkdtemp())
    >>> _ = pipe.ingest([Document("bj", "北京是中国的首都。", "zh")])
    >>> ConanRetriever(pipe, options={"retrieval": "lexical"}).retrieve("首都")[0].text
    '北京是中国的首都。'
"""

from __future__ import annotations

from llama_index.retrievers.conan.base import ConanRetriever

__all__ = ["ConanRetriever"]
