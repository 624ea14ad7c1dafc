"""Lexical and hybrid search: BM25 candidates, reciprocal-rank fusion with dense ones, true cosines.

Hybrid search fuses the dense and the lexical candidate lists by weighted reciprocal rank
(Cormack et al., 2009): a chunk at rank r (from 1) in a list of weight w earns w / (k + r), summed
over the lists, k = 60 by default. Every hit still reports its true cosine similarity to the
query, computed from its stored vector (lexical-only hits too), so ``threshold`` keeps its
meaning in every mode; it also carries its BM25 score and its fused score.

Example:
    >>> rrf([["a", "b", "c"], ["c", "a"]], weights=[1.0, 1.0], k=60)[:2]
    [('a', 0.03252247488101534), ('c', 0.032266458495966696)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.rag.rerank import cosine_scores, mmr

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from conan_rag.rag.bm25 import LexicalIndex
    from conan_rag.rag.retrieval import Hit, RetrievalOptions


def rrf(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60
) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of ranked id lists: (id, fused score), best first.

    Ties keep the order in which ids were first seen (earlier lists first).
    """
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def _dense_ids(collection: Collection, query: np.ndarray, n: int, where: Any) -> list[str]:
    raw = collection.query(
        query_embeddings=[query], n_results=n, where=where, include=["distances"]
    )
    return list(raw["ids"][0])


def search_mixed(
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
    from conan_rag.rag.retrieval import Hit

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
