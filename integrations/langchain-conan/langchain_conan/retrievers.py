"""ConanRetriever: a LangChain retriever over a conan-rag :class:`~conan_rag.rag.pipeline.Pipeline`.

Each document's ``metadata["score"]`` is the TRUE cosine similarity in [-1, 1] between the query
and the chunk; ``options`` is the same :class:`~conan_rag.rag.retrieval.RetrievalOptions` that
``Pipeline.retrieve`` and ``conan-rag query`` take, so a threshold means the same everywhere.
Needs the RAG extra: ``pip install 'langchain-conan[rag]'``.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.documents import Document as Doc
    >>> from conan_rag.rag.pipeline import Pipeline
    >>> from conan_rag.rag.retrieval import RetrievalOptions
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> pipe = Pipeline(enc, db=tempfile.mkdtemp())
    >>> _ = pipe.ingest([Doc("paris", "Paris is the capital of France.", "facts")])
    >>> retriever = ConanRetriever(pipeline=pipe, options=RetrievalOptions(k=1, threshold=0.3))
    >>> retriever.invoke("capital of France")[0].metadata["doc_id"]
    'paris'
"""

from __future__ import annotations

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

try:
    from conan_rag.rag.pipeline import Pipeline
    from conan_rag.rag.retrieval import RetrievalOptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "ConanRetriever needs conan-rag's RAG extra; install it with "
        "`pip install 'langchain-conan[rag]'` (or `pip install 'conan-rag[rag]'`)."
    ) from exc


class ConanRetriever(BaseRetriever):
    """Retrieve chunks from a conan-rag pipeline (Chroma, exact cosine re-scoring).

    ``options`` also takes a dict of the same fields (``{"k": 4, "mmr": True}``); see the
    module's example for a whole run.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    pipeline: Pipeline
    """The pipeline whose collection is searched."""

    options: RetrievalOptions = Field(default_factory=RetrievalOptions)
    """k, fetch_k, threshold, rerank, MMR and metadata filter (default: 5 best, no threshold)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.pipeline.retrieve(query, self.options)
        return [
            Document(
                page_content=hit.text, metadata={**hit.metadata, "score": hit.score}, id=hit.id
            )
            for hit in hits
        ]
