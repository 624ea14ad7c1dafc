"""ConanRetriever: a LangChain retriever over a conan-rag :class:`~conan_rag.rag.Pipeline`.

Each document's ``metadata["score"]`` is the TRUE cosine similarity in [-1, 1] between the query
and the chunk; ``options`` is the same :class:`~conan_rag.rag.RetrievalOptions` that
``Pipeline.retrieve`` and ``conan-rag query`` take, so a threshold means the same everywhere.
The retrieval mode (``retrieval="dense" | "lexical" | "hybrid"``, with ``rrf_k`` and
``weights``) and the cross-encoder stage (``reranker=``, ``rerank_top``) are options too; their
scores join the metadata (see :class:`ConanRetriever`).
Needs the RAG extra: ``pip install 'langchain-conan[rag]'``.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag import Document as Doc
    >>> from conan_rag.rag import Pipeline, RetrievalOptions
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> pipe = Pipeline(enc, db=tempfile.mkdtemp())
    >>> _ = pipe.ingest([Doc("paris", "Paris is the capital of France.", "facts")])
    >>> retriever = ConanRetriever(pipeline=pipe, options=RetrievalOptions(k=1, threshold=0.3))
    >>> retriever.invoke("capital of France")[0].metadata["doc_id"]
    'paris'
    >>> hybrid = ConanRetriever(pipeline=pipe, options={"retrieval": "hybrid", "k": 1})
    >>> sorted(k for k in hybrid.invoke("Paris")[0].metadata if k.endswith("_score"))
    ['fused_score', 'lexical_score']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

try:
    from conan_rag.rag import Hit, Pipeline, RetrievalOptions, ServedCollection
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "ConanRetriever needs conan-rag's RAG extra; install it with "
        "`pip install 'langchain-conan[rag]'` (or `pip install 'conan-rag[rag]'`)."
    ) from exc


def hit_metadata(hit: Hit, options: RetrievalOptions) -> dict[str, Any]:
    """A hit's metadata plus its scores, under the same keys in every conan-rag adapter.

    ``score`` is always the true cosine; ``lexical_score`` (BM25, ``None`` where BM25 missed
    the chunk) and ``fused_score`` (reciprocal-rank fusion) are present in the lexical and hybrid
    modes; ``rerank_score`` (``None`` past ``rerank_top``) is present with a ``reranker``.
    """
    metadata = {**hit.metadata, "score": hit.score}
    if options.retrieval != "dense":
        metadata["lexical_score"] = hit.lexical_score
        metadata["fused_score"] = hit.fused_score
    if options.reranker is not None:
        metadata["rerank_score"] = hit.rerank_score
    return metadata


class ConanRetriever(BaseRetriever):
    """Retrieve chunks from a conan-rag pipeline: dense, lexical (BM25) or hybrid, reranked or not.

    ``options`` is a :class:`~conan_rag.rag.RetrievalOptions` or a dict of its fields
    (``{"retrieval": "hybrid", "k": 4}``; an unknown key is an error listing the valid ones).
    Documents come in the pipeline's order, with the chunk id as ``id`` and these scores added
    to the chunk's metadata:

    * ``score``: the TRUE cosine similarity to the query, in every mode (what ``threshold``
      compares against);
    * ``lexical_score`` and ``fused_score``: with ``retrieval="lexical"`` or ``"hybrid"``, the
      BM25 score (``None`` where BM25 missed the chunk) and the reciprocal-rank fusion score;
    * ``rerank_score``: with ``reranker=...``, the cross-encoder's score, by which the documents
      are ordered (``None`` for documents past ``rerank_top``).

    See the module's example for a whole run.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    pipeline: Pipeline | ServedCollection
    """The pipeline whose collection is searched, or a ``conan-rag serve --collection`` server's
    collection (:class:`~conan_rag.rag.ServedCollection`: no model or store in this process)."""

    options: RetrievalOptions = Field(default_factory=RetrievalOptions)
    """k, threshold, MMR, filter, retrieval mode, fusion, reranker (default: 5 best, dense)."""

    @field_validator("options", mode="before")
    @classmethod
    def _options_from_dict(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        changes = dict(value)
        if isinstance(changes.get("weights"), list):
            changes["weights"] = tuple(changes["weights"])
        return RetrievalOptions().replace(**changes)  # unknown keys: an error naming them

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.pipeline.retrieve(query, self.options)
        return [
            Document(page_content=hit.text, metadata=hit_metadata(hit, self.options), id=hit.id)
            for hit in hits
        ]
