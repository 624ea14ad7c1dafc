"""Reciprocal-rank fusion: how hybrid search merges the dense and the lexical candidate lists.

Weighted RRF (Cormack et al., 2009): a chunk at rank r (from 1) in a list of weight w earns
w / (k + r), summed over the lists, k = 60 by default. It needs no score calibration between
BM25 and cosine, which live on different scales.

Example:
    >>> rrf([["a", "b", "c"], ["c", "a"]], weights=[1.0, 1.0], k=60)[:2]
    [('a', 0.03252247488101534), ('c', 0.032266458495966696)]
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rrf"]


def rrf(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60
) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of ranked id lists: (id, fused score), best first.

    Ties keep the order in which ids were first seen (earlier lists first).

    Example:
        >>> [item for item, _ in rrf([["a", "b"], ["b"]], weights=[1.0, 1.0])]
        ['b', 'a']
    """
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])
