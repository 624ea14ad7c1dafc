"""Retrieval from a vector store: candidates from its index, re-scored by exact cosine.

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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from conan_rag.errors import ConanConfigError, ConanInputError
from conan_rag.rag.search.exact import cosine_scores, mmr, order_by_score
from conan_rag.rag.search.fusion import rrf
from conan_rag.settings import Settings, check_choice, check_float, check_int

__all__ = [
    "QUERY_GROUP",
    "RETRIEVAL_MODES",
    "Hit",
    "RetrievalOptions",
    "check_query",
    "retrieve_many",
]

RETRIEVAL_MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")

if TYPE_CHECKING:
    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.search.lexical_index import LexicalIndex
    from conan_rag.rag.store.protocol import Field, Records, VectorStore

QUERY_GROUP = 64  # query vectors sent to the store in one call


def _check_weights(weights: object) -> None:
    """Two non-negative numbers (dense, lexical), not both 0."""
    w = weights
    if (
        not isinstance(w, (tuple, list))
        or len(w) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w)
        or sum(w) <= 0
    ):
        raise ConanConfigError(
            f"weights are two non-negative numbers (dense, lexical), not both 0: {w!r}.",
            setting="weights",
            value=w,
        )


@dataclass(frozen=True)
class RetrievalOptions(Settings):
    """How to search: how many hits, how many candidates, which threshold, diversity, filter.

    Attributes:
        k: hits to return at most.
        fetch_k: candidates taken from the index before exact re-scoring; ``None`` means
            ``max(4 * k, 20)``. At least ``k``.
        threshold: drop hits whose cosine similarity to the query is below this, in [-1, 1].
        rescore: re-score candidates exactly from their stored vectors (float64 cosines) and
            re-order them; else report ``1 - distance`` and keep the index's order. (This is
            not the cross-encoder: that is ``reranker``.)
        mmr: pick the ``k`` hits by maximal marginal relevance among the candidates above the
            threshold (each hit keeps its cosine similarity to the query as its score).
        lambda_mult: MMR's relevance/diversity trade-off in [0, 1] (1 = relevance only).
        where: a metadata filter in Chroma's syntax, e.g. ``{"source": "/docs/a.md"}``.
        retrieval: ``"dense"`` (vectors), ``"lexical"`` (BM25) or ``"hybrid"`` (both, fused by
            weighted reciprocal rank; :mod:`conan_rag.rag.search.fusion`). Every mode reports true
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
    rescore: bool = True
    mmr: bool = False
    lambda_mult: float = 0.5
    where: dict[str, Any] | None = None
    retrieval: str = "dense"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    reranker: str | None = None
    rerank_top: int = 20

    setting_kind: ClassVar[str] = "retrieval"

    def validate(self) -> None:
        """Check every field (:mod:`conan_rag.settings`); the pairs that must agree, too."""
        super().validate()
        check_int("k", self.k)
        check_int("fetch_k", self.fetch_k, allow_none=True)
        check_int("rrf_k", self.rrf_k)
        check_int("rerank_top", self.rerank_top)
        check_choice("rescore", self.rescore, (True, False))
        check_choice("mmr", self.mmr, (True, False))
        check_choice("retrieval", self.retrieval, RETRIEVAL_MODES)
        check_float("threshold", self.threshold, -1.0, 1.0, allow_none=True)
        check_float("lambda_mult", self.lambda_mult, 0.0, 1.0)
        if self.fetch_k is not None and self.fetch_k < self.k:
            raise ConanConfigError(
                f"fetch_k ({self.fetch_k}) must be at least k ({self.k}): the hits are "
                "picked among the candidates fetched.",
                setting="fetch_k",
                value=self.fetch_k,
            )
        if self.reranker is not None and self.mmr:
            raise ConanConfigError(
                "mmr and reranker each decide the order of the hits; use one of them.",
                setting="reranker",
                value=self.reranker,
            )
        _check_weights(self.weights)
        # (dense, lexical) as a tuple of floats, also when read back from JSON (a list)
        object.__setattr__(self, "weights", tuple(float(x) for x in self.weights))
        if self.where is not None and not isinstance(self.where, dict):
            raise ConanConfigError(
                f"where must be a metadata filter (a dict), not {type(self.where).__name__}.",
                setting="where",
            )

    def candidates(self, collection_size: int) -> int:
        """How many candidates to ask the index for.

        Example:
            >>> RetrievalOptions(k=5, fetch_k=8).candidates(collection_size=6)
            6
        """
        return min(collection_size, max(self.k, self.fetch_k or max(4 * self.k, 20)))


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk.

    Attributes:
        id: the chunk id.
        text: the chunk text.
        metadata: source, doc_id, title, chunk_index, char_start, char_end, ...
        score: the TRUE cosine similarity in [-1, 1] between the query and the chunk vectors
            (with ``rescore=False``, ``1 - cosine distance`` as the store reports it, equal up to
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

    Example:
        >>> check_query("Who climbed Everest?")
        'Who climbed Everest?'
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
    store: VectorStore,
    encoder: EncoderLike,
    queries: Sequence[str],
    options: RetrievalOptions,
    show_progress: bool = False,
    lexical: LexicalIndex | None = None,
) -> list[list[Hit]]:
    """The best chunks for each query (embedded together, searched in groups).

    Args:
        store: the chunks.
        encoder: embeds the queries.
        queries: the questions.
        options: how to search.
        show_progress: a bar while embedding the queries.
        lexical: the store's lexical index (required by the lexical and hybrid modes; it is
            synced first when the store changed).

    Raises:
        ConanInputError: a query is empty or only whitespace.
        ConanConfigError: a lexical or hybrid search without a lexical index.

    Example:
        >>> import tempfile
        >>> from conan_rag import load_encoder
        >>> from conan_rag.rag.store import ChromaStore, open_client
        >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
        >>> store = ChromaStore.open(open_client(db=tempfile.mkdtemp()), "notes", enc)
        >>> texts = ["Paris is the capital of France.", "Bananas are yellow."]
        >>> store.upsert(["a", "b"], enc.encode(texts), texts, [{"n": 1}, {"n": 2}])
        >>> found = retrieve_many(store, enc, ["Paris?"], RetrievalOptions(k=1))
        >>> [[hit.id for hit in hits] for hits in found]
        [['a']]
    """
    queries = [check_query(q) for q in queries]
    if not queries:
        return []
    if options.reranker is not None:
        wide = options.replace(reranker=None, k=max(options.k, options.rerank_top))
        found = retrieve_many(store, encoder, queries, wide, show_progress, lexical)
        return [_reranked(q, hits, options) for q, hits in zip(queries, found, strict=True)]
    mixed = options.retrieval != "dense"
    if mixed:
        if lexical is None:
            raise ConanConfigError(
                f"retrieval={options.retrieval!r} needs the store's lexical index; search "
                "through Pipeline.retrieve, or pass "
                'lexical=LexicalIndex(store.derived_path("lexical")).',
                setting="retrieval",
                value=options.retrieval,
            )
        lexical.ensure(store)
    count = len(lexical) if mixed and lexical is not None else store.count()  # in step with it
    if count == 0:
        return [[] for _ in queries]
    vectors = encoder.encode(queries, kind="query", show_progress=show_progress)
    if mixed and lexical is not None:
        return [
            _mixed_hits(store, lexical, text, vector, options, count)
            for text, vector in zip(queries, vectors, strict=True)
        ]
    fields: tuple[Field, ...] = ("texts", "metadatas")
    if options.rescore or options.mmr:
        fields = (*fields, "vectors")
    results: list[list[Hit]] = []
    for start in range(0, len(vectors), QUERY_GROUP):
        block = vectors[start : start + QUERY_GROUP]
        near = store.query(block, options.candidates(count), where=options.where, fields=fields)
        results.extend(_hits(rows, v, options) for rows, v in zip(near, block, strict=True))
    return results


def _hits(found: Records, query: np.ndarray, options: RetrievalOptions) -> list[Hit]:
    """Dense hits for one query from its candidates (re-scored exactly unless not ``rescore``)."""
    if not found.ids:
        return []
    stored = found.vectors
    if options.rescore and stored is not None:
        scores = cosine_scores(query, stored)
        order = order_by_score(scores, options.threshold)
    else:
        scores = 1.0 - np.asarray(found.distances or [], dtype=np.float64)
        order = np.arange(len(scores))
        if options.threshold is not None:
            order = order[scores >= options.threshold]
    if options.mmr and stored is not None:
        picks = mmr(query, stored, options.k, lambda_mult=options.lambda_mult, candidates=order)
    else:
        picks = [int(i) for i in order[: options.k]]
    texts = found.texts or [""] * len(found)
    metadatas = found.metadatas or [{} for _ in found.ids]
    return [Hit(found.ids[i], texts[i], dict(metadatas[i]), float(scores[i])) for i in picks]


def _dense_ids(store: VectorStore, query: np.ndarray, n: int, where: Any) -> list[str]:
    return store.query(query[np.newaxis, :], n, where=where, fields=())[0].ids


def _mixed_hits(
    store: VectorStore,
    index: LexicalIndex,
    text: str,
    query: np.ndarray,
    options: RetrievalOptions,
    count: int,
) -> list[Hit]:
    """Lexical (``options.retrieval == "lexical"``) or hybrid hits for one query.

    Args:
        store: the chunks.
        index: the store's lexical index (already in step with it).
        text: the query text (for BM25).
        query: the query vector (for the dense list and every hit's true cosine).
        options: k, fetch_k, threshold, mmr, where, rrf_k, weights.
        count: the store's size.
    """
    n = options.candidates(count)
    lexical = index.search(text, k=n if options.where is None else count)
    bm25 = dict(lexical)
    lists: list[list[str]] = [[i for i, _ in lexical]]
    weights = [options.weights[1]]
    if options.retrieval == "hybrid":
        lists.insert(0, _dense_ids(store, query, n, options.where))
        weights.insert(0, options.weights[0])
    fused = rrf(lists, weights, k=options.rrf_k)
    if not fused:
        return []
    order = [i for i, _ in fused]
    if options.where is None:  # no filter drops any: only the best max(n, k) are kept
        order = order[: max(n, options.k)]
    got = store.get(order, ("texts", "metadatas", "vectors"), where=options.where)
    position = {i: p for p, i in enumerate(got.ids)}
    kept = [i for i in order if i in position][: max(n, options.k)]  # the filter may drop some
    if not kept or got.vectors is None:
        return []
    rows = [position[i] for i in kept]
    stored = got.vectors[rows]
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
    texts = got.texts or [""] * len(got)
    metadatas = got.metadatas or [{} for _ in got.ids]
    return [
        Hit(
            kept[p],
            texts[rows[p]],
            dict(metadatas[rows[p]]),
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
