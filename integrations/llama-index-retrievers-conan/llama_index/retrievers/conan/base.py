"""ConanRetriever: a LlamaIndex retriever over a conan-rag ``Pipeline`` (dense, BM25 or hybrid).

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag import Document, Pipeline
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> pipe = Pipeline(enc, db=tempfile.mkdtemp())
    >>> _ = pipe.ingest([Document("e1", "Error E-1234 means the pump overheated.", "manual")])
    >>> retriever = ConanRetriever(pipe, options={"retrieval": "hybrid", "k": 1})
    >>> node = retriever.retrieve("E-1234")[0]
    >>> node.metadata["doc_id"], node.metadata["lexical_score"] > 0
    ('e1', True)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import IndexNode, NodeWithScore, QueryBundle, TextNode

try:
    from conan_rag import ConanConfigError
    from conan_rag.rag import Hit, Pipeline, RetrievalOptions, ServedCollection
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "llama-index-retrievers-conan needs conan-rag's RAG extra; install it with "
        "`pip install 'conan-rag[rag]'`."
    ) from exc

# Scores the retriever adds to a chunk's metadata (the same keys as LangChain's ConanRetriever).
SCORE_KEYS: tuple[str, ...] = ("score", "lexical_score", "fused_score", "rerank_score")
# The pipeline's bookkeeping, kept in the metadata but left out of what an LLM reads.
BOOKKEEPING_KEYS: tuple[str, ...] = (
    "doc_key",
    "doc_hash",
    "chunk_index",
    "char_start",
    "char_end",
    "n_chunks",
)


def as_options(options: RetrievalOptions | Mapping[str, Any] | None) -> RetrievalOptions:
    """Options from a :class:`~conan_rag.rag.RetrievalOptions` or a dict of its fields.

    Raises:
        ConanConfigError: an unknown key (the message lists the valid ones) or a bad value.

    Example:
        >>> as_options({"retrieval": "hybrid", "weights": [1, 2]}).weights
        (1.0, 2.0)
    """
    if options is None:
        return RetrievalOptions()
    if isinstance(options, RetrievalOptions):
        return options
    if not isinstance(options, Mapping):
        raise ConanConfigError(
            f"options is a RetrievalOptions or a dict of its fields, not {type(options).__name__}.",
            setting="options",
        )
    changes = dict(options)
    if isinstance(changes.get("weights"), list):
        changes["weights"] = tuple(changes["weights"])
    return RetrievalOptions().replace(**changes)


class ConanRetriever(BaseRetriever):
    """Retrieve chunks from a conan-rag pipeline: dense, lexical (BM25) or hybrid, reranked or not.

    ``options`` is the :class:`~conan_rag.rag.RetrievalOptions` that
    ``Pipeline.retrieve`` and ``conan-rag query`` take, or a dict of its fields:
    ``{"retrieval": "hybrid", "k": 5}`` fuses BM25 (jieba-aware for Chinese) with the dense
    list; ``{"reranker": "BAAI/bge-reranker-v2-m3"}`` re-scores the best ``rerank_top``
    candidates with a cross-encoder. The query is embedded by the pipeline's own encoder
    (a ``QueryBundle``'s ``embedding`` and ``custom_embedding_strs`` are not used).

    Each hit becomes ``NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata=...))``
    in the pipeline's order. ``NodeWithScore.score`` is the score that order follows:

    * without a reranker, the TRUE cosine similarity in [-1, 1] between query and chunk (in
      every mode: lexical-only hits are scored from their stored vectors too);
    * with a reranker, the cross-encoder's score (``None`` for hits past ``rerank_top``, which
      the cross-encoder did not score), as LlamaIndex's rerankers set it.

    The metadata holds the chunk's metadata plus ``score`` (always the true cosine, what
    ``threshold`` compares against), ``lexical_score`` and ``fused_score`` (lexical and hybrid
    modes; ``lexical_score`` is ``None`` where BM25 missed the chunk) and ``rerank_score`` (with
    a reranker): the same keys as LangChain's ``ConanRetriever``. Nodes are embedded and
    reranked on their text alone (every metadata key is excluded from ``MetadataMode.EMBED``, as
    the pipeline embedded the chunk), and the scores and pipeline bookkeeping
    (:data:`BOOKKEEPING_KEYS`) are excluded from what an LLM reads.

    Args:
        pipeline: the pipeline whose collection is searched, or a server's
            (:class:`~conan_rag.rag.ServedCollection`, no model or store in this process).
        options: how to search (default: ``RetrievalOptions()``, the 5 best by dense cosine).
        callback_manager: LlamaIndex callbacks (default: ``Settings.callback_manager``).
        object_map: LlamaIndex's recursive-retrieval objects by index id.
        objects: the same as a list of ``IndexNode``.
        verbose: print recursive-retrieval steps.

    Raises:
        ConanConfigError: an unknown option or a bad value (the message lists the valid ones).

    Example:
        >>> import tempfile
        >>> from conan_rag import load_encoder
        >>> from conan_rag.rag import Document, Pipeline
        >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> pipe = Pipeline(enc, db=tempfile.mkdtemp())
        >>> _ = pipe.ingest([Document("paris", "Paris is the capital of France.", "facts")])
        >>> retriever = ConanRetriever(pipe, options={"k": 1, "threshold": 0.3})
        >>> found = retriever.retrieve("capital of France")[0]
        >>> found.score == found.metadata["score"], found.node.node_id == found.node.id_
        (True, True)
    """

    def __init__(
        self,
        pipeline: Pipeline | ServedCollection,
        options: RetrievalOptions | Mapping[str, Any] | None = None,
        *,
        callback_manager: CallbackManager | None = None,
        object_map: dict[str, Any] | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        if not callable(getattr(pipeline, "retrieve", None)):
            raise ConanConfigError(
                f"pipeline is a conan_rag Pipeline, not {type(pipeline).__name__}.",
                setting="pipeline",
            )
        self.pipeline = pipeline
        self.options = as_options(options)
        super().__init__(
            callback_manager=callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    def __repr__(self) -> str:
        default = RetrievalOptions()
        changed = {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(self.options)
            if getattr(self.options, f.name) != getattr(default, f.name)
        }
        name = getattr(self.pipeline, "name", "?")
        return f"ConanRetriever(collection={name!r}, options={changed})"

    def _node(self, hit: Hit) -> NodeWithScore:
        metadata = {**hit.metadata, "score": hit.score}
        if self.options.retrieval != "dense":
            metadata["lexical_score"] = hit.lexical_score
            metadata["fused_score"] = hit.fused_score
        if self.options.reranker is not None:
            metadata["rerank_score"] = hit.rerank_score
        hidden = [k for k in metadata if k in SCORE_KEYS or k in BOOKKEEPING_KEYS]
        node = TextNode(
            id_=hit.id,
            text=hit.text,
            metadata=metadata,
            excluded_embed_metadata_keys=list(metadata),
            excluded_llm_metadata_keys=hidden,
        )
        score = hit.rerank_score if self.options.reranker is not None else hit.score
        return NodeWithScore(node=node, score=score)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.pipeline.retrieve(query_bundle.query_str, self.options)
        return [self._node(hit) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Like the sync hook, in a worker thread so the event loop keeps running."""
        return await asyncio.to_thread(self._retrieve, query_bundle)
