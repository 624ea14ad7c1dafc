"""Exact scoring (:mod:`conan_rag.rag.search.exact`): cosine, threshold order, MMR by hand."""

from __future__ import annotations

import numpy as np
import pytest

from conan_rag.rag.search.exact import cosine_scores, mmr, order_by_score


def test_cosine_is_exact_for_unnormalized_vectors() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=16)
    docs = rng.normal(size=(20, 16)) * rng.uniform(0.1, 10, size=(20, 1))
    expected = [float(d @ q / np.linalg.norm(d) / np.linalg.norm(q)) for d in docs]
    assert cosine_scores(q, docs) == pytest.approx(expected, abs=1e-12)
    assert cosine_scores(q, np.zeros((1, 16))).tolist() == [0.0]
    assert cosine_scores(q, np.zeros((0, 16))).shape == (0,)


def test_float32_stored_vectors_give_float64_cosines() -> None:
    # the store hands back float32 vectors; the scores are computed in float64 from them
    rng = np.random.default_rng(1)
    q = rng.normal(size=32).astype(np.float32)
    docs = rng.normal(size=(8, 32)).astype(np.float32)
    scores = cosine_scores(q, docs)
    assert scores.dtype == np.float64
    ref = docs.astype(np.float64) @ q.astype(np.float64)
    ref /= np.linalg.norm(docs.astype(np.float64), axis=1) * np.linalg.norm(q.astype(np.float64))
    assert np.allclose(scores, ref, rtol=0, atol=1e-12)


def test_order_by_score_threshold_is_inclusive() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.5, -0.3])
    assert order_by_score(scores).tolist() == [1, 2, 3, 0, 4]
    assert order_by_score(scores, threshold=0.5).tolist() == [1, 2, 3]
    assert order_by_score(scores, threshold=0.95).tolist() == []


def test_mmr_trades_relevance_for_diversity() -> None:
    q = np.array([1.0, 1.0, 0.0])
    v = np.array([[1.0, 0.8, 0.0], [1.0, 0.75, 0.0], [0.4, 1.0, 0.1], [0.0, 0.0, 1.0]])
    assert mmr(q, v, 3, lambda_mult=1.0) == [0, 1, 2]
    assert mmr(q, v, 2, lambda_mult=0.5) == [0, 2]
    assert mmr(q, v, 2, lambda_mult=0.5, candidates=np.array([1, 3])) == [1, 3]
    assert mmr(q, v, 0) == [] and mmr(q, v, 5, candidates=np.array([], dtype=int)) == []
    with pytest.raises(ValueError, match="lambda_mult"):
        mmr(q, v, 2, lambda_mult=1.5)
