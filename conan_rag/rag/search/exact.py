"""Exact scoring of candidates from their stored vectors: true cosine, threshold and MMR.

Nothing is re-embedded: the candidates' vectors come back from the store, and every score is
computed in float64 from them, so a threshold means the same in every retrieval mode. (Reordering
by a cross-encoder is *reranking*: :mod:`conan_rag.reranking`.)

Example:
    >>> import numpy as np
    >>> q = np.array([1.0, 0.0], dtype=np.float32)
    >>> docs = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    >>> cosine_scores(q, docs).round(2).tolist()
    [0.6, 1.0, 0.0]
    >>> order_by_score(cosine_scores(q, docs), threshold=0.5).tolist()
    [1, 0]
"""

from __future__ import annotations

import numpy as np

from conan_rag.errors import ConanConfigError

__all__ = ["cosine_scores", "mmr", "order_by_score"]


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0.0, 1.0, norms)


def cosine_scores(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """True cosine similarity in [-1, 1] of ``query`` (dim,) to each row of ``vectors`` (n, dim).

    Vectors are re-normalized in float64, so stored vectors that are not exactly unit length
    still give exact cosines (float64). A zero vector scores 0.

    Example:
        >>> import numpy as np
        >>> q = np.array([3.0, 4.0], dtype=np.float32)
        >>> cosine_scores(q, np.array([[6.0, 8.0], [0.0, 0.0]], dtype=np.float32)).tolist()
        [1.0, 0.0]
    """
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.clip(_unit(vectors) @ _unit(query), -1.0, 1.0)


def order_by_score(scores: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Indices by decreasing score (stable), dropping scores below ``threshold`` (inclusive).

    Example:
        >>> import numpy as np
        >>> order_by_score(np.array([0.2, 0.9, 0.5], dtype=np.float32), threshold=0.5).tolist()
        [1, 2]
    """
    order = np.argsort(-scores, kind="stable")
    if threshold is not None:
        order = order[scores[order] >= threshold]
    return order


def mmr(
    query: np.ndarray,
    vectors: np.ndarray,
    k: int,
    *,
    lambda_mult: float = 0.5,
    candidates: np.ndarray | None = None,
) -> list[int]:
    """Maximal marginal relevance: pick ``k`` rows relevant to ``query`` and unlike each other.

    Each step takes the candidate maximizing
    ``lambda_mult * cos(query, d) - (1 - lambda_mult) * max(cos(d, chosen))``.

    Args:
        query: the query vector.
        vectors: candidate vectors (n, dim).
        k: how many to pick.
        lambda_mult: 1 = pure relevance, 0 = pure diversity.
        candidates: indices allowed (e.g. those above a threshold); default all.

    Returns:
        Chosen row indices in pick order.

    Example:
        >>> import numpy as np
        >>> v = np.array([[1.0, 0.0], [0.99, 0.14], [0.7, -0.7]], dtype=np.float32)
        >>> mmr(np.array([1.0, 0.0], dtype=np.float32), v, 2, lambda_mult=0.3)
        [0, 2]
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise ConanConfigError(
            f"lambda_mult must be in [0, 1], not {lambda_mult}.",
            setting="lambda_mult",
            value=lambda_mult,
        )
    pool = list(range(len(vectors)) if candidates is None else (int(i) for i in candidates))
    if not pool or k <= 0:
        return []
    unit = _unit(vectors)
    relevance = unit @ _unit(query)
    similarity = unit @ unit.T
    chosen: list[int] = []
    while pool and len(chosen) < k:
        redundancy = similarity[np.ix_(pool, chosen)].max(axis=1) if chosen else np.zeros(len(pool))
        gains = lambda_mult * relevance[pool] - (1.0 - lambda_mult) * redundancy
        best = pool[int(np.argmax(gains))]
        chosen.append(best)
        pool.remove(best)
    return chosen
