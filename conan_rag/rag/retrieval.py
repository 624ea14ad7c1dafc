"""Retrieval from a Chroma collection: candidates from the index, re-scored by exact cosine.

:class:`RetrievalOptions` is the one description of a search, shared by
:meth:`Pipeline.retrieve <conan_rag.rag.pipeline.Pipeline.retrieve>`, the LangChain retriever and
``conan-rag query``. Every :class:`Hit` carries the TRUE cosine similarity in [-1, 1] between the
query vector and the chunk's stored vector, so a threshold means the same everywhere.

Example:
    >>> RetrievalOptions(k=3, threshold=0.4).candidates(collection_size=100)
    20
    >>> RetrievalOptions(k=0)
    Traceback (most recent call last):
    ...
    conan_rag.errors.ConanConfigError: k must be an integer >= 1, not 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.errors import ConanConfigError, ConanInputError
from conan_rag.rag.fusion import rrf
from conan_rag.rag.rerank import cosine_scores, mmr, order_by_score

RETRIEVAL_MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.bm25 import LexicalIndex

QUERY_GROUP = 64  # query vectors sent to Chroma in one call


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConanConfigError(
            f"{name} must be an integer >= 1, not {value!r}.", setting=name, value=value
        )


@dataclass(frozen=True)
class RetrievalOptions:
    """How to search: how many hits, how many candidates, which threshold, diversity, filter.

    Attributes:
        k: hits to return at most.
        fetch_k: candidates taken from the index before exact re-scoring; ``None`` means
            ``max(4 * k, 20)``. At least ``k``.
        threshold: drop hits whose cosine similarity to the query is below this, in [-1, 1].
        rerank: re-score candidates exactly from their stored vectors and re-order them; else
            report ``1 - distance`` and keep the index's order.
        mmr: pick the ``k`` hits by maximal marginal relevance among the candidates above the
            threshold (each hit keeps its cosine similarity to the query as its score).
        lambda_mult: MMR's relevance/diversity trade-off in [0, 1] (1 = relevance only).
        where: a Chroma metadata filter, e.g. ``{"source": "/docs/a.md"}``.
        retrieval: ``"dense"`` (vectors), ``"lexical"`` (BM25) or ``"hybrid"`` (both, fused by
            weighted reciprocal rank; :mod:`conan_rag.rag.fusion`). Every mode reports true
            cosines, so ``threshold`` means the same in all three.
        rrf_k: the reciprocal-rank constant (a hit at rank r earns weight / (rrf_k + r)).
        weights: (dense, lexical) weights of the fusion.
        reranker: a cross-encoder (sentence-transformers ``CrossEncoder`` folder or hub id in
            the local cache, e.g. ``BAAI/bge-reranker-v2-m3``) that re-scores the best
            ``rerank_top`` candidates and orders the hits by its score (``None``: no reranking).
            Hits above ``threshold`` (a cosine) are the candidates.
        rerank_top: how many of the best candidates the cross-encoder scores; with a larger
            ``k``, the rest follow in their first order.
    """

    k: int = 5
    fetch_k: int | None = None
    threshold: float | None = None
    rerank: bool = True
    mmr: bool = False
    lambda_mult: float = 0.5
    where: dict[str, Any] | None = None
    retrieval: str = "dense"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    reranker: str | None = None
    rerank_top: int = 20

    def __post_init__(self) -> None:
        _positive_int("k", self.k)
        _positive_int("rrf_k", self.rrf_k)
        _positive_int("rerank_top", self.rerank_top)
        if self.reranker is not None and self.mmr:
            raise ConanConfigError(
                "mmr and reranker each decide the order of the hits; use one of them.",
                setting="reranker",
                value=self.reranker,
            )
        if self.retrieval not in RETRIEVAL_MODES:
            raise ConanConfigError(
                f"retrieval must be one of {list(RETRIEVAL_MODES)}, not {self.retrieval!r}.",
                setting="retrieval",
                value=self.retrieval,
                choices=RETRIEVAL_MODES,
            )
        w = self.weights
        if (
            not isinstance(w, (tuple, list))
            or len(w) != 2
            or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w
            )
            or sum(w) <= 0
        ):
            raise ConanConfigError(
                f"weights are two non-negative numbers (dense, lexical), not both 0: {w!r}.",
                setting="weights",
                value=w,
            )
        if self.fetch_k is not None:
            _positive_int("fetch_k", self.fetch_k)
            if self.fetch_k < self.k:
                raise ConanConfigError(
                    f"fetch_k ({self.fetch_k}) must be at least k ({self.k}): the hits are "
                    "picked among the candidates fetched.",
                    setting="fetch_k",
                    value=self.fetch_k,
                )
        t = self.threshold
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not -1.0 <= t <= 1.0
        ):
            raise ConanConfigError(
                f"threshold is a cosine similarity in [-1, 1], not {t!r}.",
                setting="threshold",
                value=t,
            )
        lam = self.lambda_mult
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
            raise ConanConfigError(
                f"lambda_mult must be in [0, 1], not {lam!r}.", setting="lambda_mult", value=lam
            )
        if self.where is not None and not isinstance(self.where, dict):
            raise ConanConfigError(
                "where must be a Chroma metadata filter (a dict), not "
                f"{type(self.where).__name__}.",
                setting="where",
            )

    def replace(self, **changes: Any) -> RetrievalOptions:
        """A copy with some fields changed (unknown names are an error listing the valid ones).

        Example:
            >>> RetrievalOptions().replace(k=2).k
            2
        """
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ConanConfigError(
                f"Unknown retrieval option(s) {unknown}; valid options are {valid}.",
                setting=unknown[0],
                choices=valid,
            )
        return dataclasses.replace(self, **changes)

    def candidates(self, collection_size: int) -> int:
        """How many candidates to ask the index for."""
        return min(collection_size, max(self.k, self.fetch_k or max(4 * self.k, 20)))


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk.

    Attributes:
        id: the chunk id.
        text: the chunk text.
        metadata: source, doc_id, title, chunk_index, char_start, char_end, ...
        score: the TRUE cosine similarity in [-1, 1] between the query and the chunk vectors
            (with ``rerank=False``, ``1 - cosine distance`` as Chroma reports it, equal up to
            float32 rounding).
        lexical_score: its BM25 score (lexical and hybrid modes; ``None`` if BM25 missed it).
        fused_score: its reciprocal-rank fusion score (lexical and hybrid modes).
        rerank_score: the cross-encoder's score (with ``reranker``); hits are in its order.
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    lexical_score: float | None = None
    fused_score: float | None = None
    rerank_score: float | None = None


def check_query(query: object) -> str:
    """A query must be a non-blank string.

    Raises:
        ConanInputError: it is empty or only whitespace.
        ConanConfigError: it is not a string.
    """
    if not isinstance(query, str):
        raise ConanConfigError(
            f"A query is a string, not {type(query).__name__}.", setting="query", value=query
        )
    if not query.strip():
        raise ConanInputError(
            "The query is empty (or only whitespace); ask a question with some words in it."
        )
    return query


def retrieve_many(
    collection: Collection,
    encoder: EncoderLike,
    queries: Sequence[str],
    options: RetrievalOptions,
    show_progress: bool = False,
    lexical: LexicalIndex | None = None,
) -> list[list[Hit]]:
    """The best chunks for each query (embedded together, searched in groups).

    Args:
        collection: the chunks.
        encoder: embeds the queries.
        queries: the questions.
        options: how to search.
        show_progress: a bar while embedding the queries.
        lexical: the collection's lexical index (required by the lexical and hybrid modes; it
            is synced first when the collection changed).

    Raises:
        ConanInputError: a query is empty or only whitespace.
        ConanConfigError: a lexical or hybrid search without a lexical index.
    """
    queries = [check_query(q) for q in queries]
    if not queries:
        return []
    if options.reranker is not None:
        wide = options.replace(reranker=None, k=max(options.k, options.rerank_top))
        found = retrieve_many(collection, encoder, queries, wide, show_progress, lexical)
        return [_reranked(q, hits, options) for q, hits in zip(queries, found, strict=True)]
    count = collection.count()
    if count == 0:
        return [[] for _ in queries]
    vectors = encoder.encode(queries, kind="query", show_progress=show_progress)
    if options.retrieval != "dense":
        if lexical is None:
            raise ConanConfigError(
                f"retrieval={options.retrieval!r} needs the collection's lexical index; search "
                "through Pipeline.retrieve, or pass lexical=LexicalIndex(...).",
                setting="retrieval",
                value=options.retrieval,
            )
        lexical.ensure(collection)
        return [
            _mixed_hits(collection, lexical, text, vector, options, count)
            for text, vector in zip(queries, vectors, strict=True)
        ]
    include: list[Any] = ["documents", "metadatas", "distances"]
    if options.rerank or options.mmr:
        include.append("embeddings")
    results: list[list[Hit]] = []
    for start in range(0, len(vectors), QUERY_GROUP):
        block = vectors[start : start + QUERY_GROUP]
        raw = collection.query(
            query_embeddings=block,
            n_results=options.candidates(count),
            where=options.where,
            include=include,
        )
        results.extend(_hits(raw, row, vector, options) for row, vector in enumerate(block))
    return results


def _hits(raw: Any, row: int, query: np.ndarray, options: RetrievalOptions) -> list[Hit]:
    ids = list(raw["ids"][row])
    if not ids:
        return []
    texts, metas = raw["documents"][row], raw["metadatas"][row]
    stored = np.asarray(raw["embeddings"][row]) if raw.get("embeddings") is not None else None
    if options.rerank and stored is not None:
        scores = cosine_scores(query, stored)
        order = order_by_score(scores, options.threshold)
    else:
        scores = 1.0 - np.asarray(raw["distances"][row], dtype=np.float64)
        order = np.arange(len(scores))
        if options.threshold is not None:
            order = order[scores >= options.threshold]
    if options.mmr and stored is not None:
        picks = mmr(query, stored, options.k, lambda_mult=options.lambda_mult, candidates=order)
    else:
        picks = [int(i) for i in order[: options.k]]
    return [Hit(ids[i], texts[i] or "", dict(metas[i] or {}), float(scores[i])) for i in picks]


def _dense_ids(collection: Collection, query: np.ndarray, n: int, where: Any) -> list[str]:
    raw = collection.query(
        query_embeddings=[query], n_results=n, where=where, include=["distances"]
    )
    return list(raw["ids"][0])


def _mixed_hits(
    collection: Collection,
    index: LexicalIndex,
    text: str,
    query: np.ndarray,
    options: RetrievalOptions,
    count: int,
) -> list[Hit]:
    """Lexical (``options.retrieval == "lexical"``) or hybrid hits for one query.

    Args:
        collection: the chunks.
        index: the collection's lexical index (already in step with it).
        text: the query text (for BM25).
        query: the query vector (for the dense list and every hit's true cosine).
        options: k, fetch_k, threshold, mmr, where, rrf_k, weights.
        count: the collection's size.
    """
    n = options.candidates(count)
    lexical = index.search(text, k=n if options.where is None else count)
    bm25 = dict(lexical)
    lists: list[list[str]] = [[i for i, _ in lexical]]
    weights = [options.weights[1]]
    if options.retrieval == "hybrid":
        lists.insert(0, _dense_ids(collection, query, n, options.where))
        weights.insert(0, options.weights[0])
    fused = rrf(lists, weights, k=options.rrf_k)
    if not fused:
        return []
    order = [i for i, _ in fused]
    got = collection.get(
        ids=order, where=options.where, include=["documents", "metadatas", "embeddings"]
    )
    position = {i: p for p, i in enumerate(got["ids"])}
    kept = [i for i in order if i in position][: max(n, options.k)]  # the filter may drop some
    if not kept:
        return []
    rows = [position[i] for i in kept]
    stored = np.asarray(got["embeddings"])[rows]
    scores = cosine_scores(query, stored)
    candidates = np.arange(len(kept))
    if options.threshold is not None:
        candidates = candidates[scores >= options.threshold]
    if options.mmr:
        lam = options.lambda_mult
        picks = mmr(query, stored, options.k, lambda_mult=lam, candidates=candidates)
    else:
        picks = [int(c) for c in candidates[: options.k]]
    fused_score = dict(fused)
    documents, metadatas = got["documents"] or [], got["metadatas"] or []
    return [
        Hit(
            kept[p],
            documents[rows[p]] or "",
            dict(metadatas[rows[p]] or {}),
            float(scores[p]),
            lexical_score=bm25.get(kept[p]),
            fused_score=fused_score[kept[p]],
        )
        for p in picks
    ]


def _reranked(query: str, hits: list[Hit], options: RetrievalOptions) -> list[Hit]:
    """The best ``rerank_top`` hits in the cross-encoder's order, then the rest; ``k`` in all."""
    from conan_rag.reranking import load_reranker

    top, rest = hits[: options.rerank_top], hits[options.rerank_top :]
    if not top:
        return []
    ranked = load_reranker(options.reranker).rank(query, [h.text for h in top])
    first = [dataclasses.replace(top[index], rerank_score=score) for index, score in ranked]
    return (first + rest)[: options.k]
