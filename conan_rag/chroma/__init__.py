"""Chroma embedding function on the shared encoder, saved with a collection as config.

Chroma stores ``name()`` and ``get_config()`` with a collection; importing this package registers
:class:`ConanEmbeddingFunction` under the name ``"conan-rag"``, so any process that imports it can
open the collection by name alone (``client.get_collection(name)``) and query it with
``query_texts``: Chroma rebuilds the function with
:meth:`ConanEmbeddingFunction.build_from_config`. The LangChain and LlamaIndex adapters
(``ConanEmbeddings``, ``ConanEmbedding``) import it when they load their encoder, wherever
chromadb is installed, so a collection ``conan-rag ingest`` built opens through
langchain-chroma or LlamaIndex's ``ChromaVectorStore`` without this import.

What a collection records is what changes the vectors (model, revision, prompts,
``truncate_dim``, ``max_seq_length``, normalization, and the model's fingerprint). Device and
dtype are chosen by the machine that opens it (``"auto"``), or by the ``CONAN_RAG_DEVICE`` and
``CONAN_RAG_DTYPE`` environment variables, or by passing your own function to
``get_collection``; ``CONAN_RAG_ENDPOINT`` embeds on a ``conan-rag serve`` server instead. A
function whose vector settings differ from the recorded ones is refused when the collection is
opened, before anything is added or queried (:func:`check_reopen`).

Modules: :mod:`~conan_rag.chroma.embedding_function` (the function),
:mod:`~conan_rag.chroma.reopen` (the reopen check).

Example:
    >>> import chromadb
    >>> from conan_rag.chroma import ConanEmbeddingFunction
    >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> col = chromadb.EphemeralClient().create_collection("facts", embedding_function=ef)
    >>> col.add(ids=["1", "2"], documents=["Paris is in France.", "Bananas are yellow."])
    >>> col.query(query_texts=["French capital"], n_results=1)["ids"]
    [['1']]
"""

from __future__ import annotations

from conan_rag.chroma.embedding_function import (
    DEVICE_ENV,
    DTYPE_ENV,
    ENDPOINT_ENV,
    FINGERPRINT,
    NAME,
    VECTOR_SETTINGS,
    ConanEmbeddingFunction,
)
from conan_rag.chroma.reopen import check_reopen

__all__ = [
    "DEVICE_ENV",
    "DTYPE_ENV",
    "ENDPOINT_ENV",
    "FINGERPRINT",
    "NAME",
    "VECTOR_SETTINGS",
    "ConanEmbeddingFunction",
    "check_reopen",
]
