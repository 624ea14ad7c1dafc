"""ConanRetriever: a LangChain retriever over a conan-rag :class:`~conan_rag.pipeline.Pipeline`.

Each document's ``metadata["score"]`` is the TRUE cosine similarity in [-1, 1] between the query
and the chunk, and ``threshold`` drops documents below it — the same semantics as
``Pipeline.retrieve`` and ``conan-rag query --threshold``.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.loaders import Document as Doc
    >>> from conan_rag.pipeline import Pipeline
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> pipe = Pipeline(enc, db=tempfile.mkdtemp())
    >>> _ = pipe.ingest([Doc("paris", "Paris is the capital of France.", "facts")])
    >>> retriever = ConanRetriever(pipeline=pipe, k=1, threshold=0.3)
    >>> retriever.invoke("capital of France")[0].metadata["doc_id"]
    'paris'
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

try:
    from conan_rag.pipeline import Pipeline
except ImportError as exc:  # pragma: no cover - exercised only without conan-rag installed
    raise ImportError(
        "ConanRetriever needs the conan-rag package; install it with `pip install conan-rag`."
    ) from exc


class ConanRetriever(BaseRetriever):
    """Retrieve chunks from a conan-rag pipeline (Chroma, exact cosine re-scoring).

    Example:
        >>> retriever = ConanRetriever(pipeline=pipe, k=4, mmr=True)  # doctest: +SKIP
        >>> docs = retriever.invoke("What is RAG?")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    pipeline: Pipeline
    """The pipeline whose collection is searched."""

    k: int = Field(default=4, ge=1)
    """Documents to return at most."""

    fetch_k: int | None = Field(default=None, ge=1)
    """Candidates fetched from the index before exact re-scoring (default ``max(4k, 20)``)."""

    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Drop documents whose cosine similarity to the query is below this."""

    rerank: bool = True
    """Re-score candidates exactly from their stored vectors and re-order them."""

    where: dict[str, Any] | None = None
    """A Chroma metadata filter, e.g. ``{"source": "/docs/a.md"}``."""

    mmr: bool = False
    """Diversify the results with maximal marginal relevance."""

    lambda_mult: float = Field(default=0.5, ge=0.0, le=1.0)
    """MMR's relevance/diversity trade-off (1 = relevance only)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.pipeline.retrieve(
            query,
            k=self.k,
            fetch_k=self.fetch_k,
            threshold=self.threshold,
            rerank=self.rerank,
            where=self.where,
            mmr=self.mmr,
            lambda_mult=self.lambda_mult,
        )
        return [
            Document(
                page_content=hit.text, metadata={**hit.metadata, "score": hit.score}, id=hit.id
            )
            for hit in hits
        ]
