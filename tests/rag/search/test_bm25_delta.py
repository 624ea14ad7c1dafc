"""BM25 by delta: chunks scored beside bm25s's matrices score as they would inside them.

No model: token lists drawn from a fixed vocabulary (a fixed seed), so every check is exact up
to float32 rounding.
"""

from __future__ import annotations

import bm25s
import numpy as np
import pytest

from conan_rag.rag.search.bm25_delta import Delta, Segment, delta_limit

VOCAB = [f"w{i}" for i in range(60)]


def _corpus(n: int, seed: int = 0) -> dict[str, list[str]]:
    """``n`` chunks of 3-40 words, a few words far more common than the rest (as in text)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(VOCAB) + 1)
    weights /= weights.sum()
    return {
        f"c{i:04d}": list(rng.choice(VOCAB, size=int(rng.integers(3, 41)), p=weights))
        for i in range(n)
    }


def _segment(chunks: dict[str, list[str]]) -> Segment:
    ids = sorted(chunks)
    bm25 = bm25s.BM25()
    bm25.index([chunks[i] for i in ids], show_progress=False)
    avgdl = float(np.mean([len(chunks[i]) for i in ids]))
    return Segment(ids, bm25, version="v", seq=0, avgdl=avgdl)


QUERIES = [["w0"], ["w3", "w17"], ["w5", "w5", "w40"], ["w59", "w1", "w2", "w8"]]


def test_a_delta_chunk_scores_exactly_as_inside_the_segment() -> None:
    chunks = _corpus(300)
    main = _segment(chunks)
    for chunk_id in ("c0000", "c0123", "c0299"):
        delta = Delta(main, changed=[chunk_id], fresh={chunk_id: chunks[chunk_id]})
        row = main.position(chunk_id)
        for words in QUERIES:
            inside = main.bm25.get_scores(words)[row]
            assert delta.fresh_scores(words)[0] == pytest.approx(inside, rel=1e-5, abs=1e-7)
        # the chunk is found once (masked in the segment, scored in the delta)
        found = [i for i, _ in delta.search(QUERIES[0], k=300)]
        assert found.count(chunk_id) == (1 if "w0" in chunks[chunk_id] else 0)


def test_a_delta_finds_what_a_rebuild_finds_and_never_a_deleted_chunk() -> None:
    chunks = _corpus(300)
    main = _segment(chunks)
    changed = {"c0001": None, "c0002": None, "c0010": _corpus(1, seed=7)["c0000"]}
    changed |= {f"n{i}": tokens for i, tokens in enumerate(_corpus(12, seed=3).values())}
    fresh = {i: t for i, t in changed.items() if t is not None}
    delta = Delta(main, changed=list(changed), fresh=fresh)
    now = {i: t for i, t in chunks.items() if i not in changed} | fresh
    rebuilt = _segment(now)
    assert len(delta) == len(now) == 310 and delta.dead == 3
    for words in QUERIES:
        got = delta.search(words, k=400)
        want = rebuilt.search(words, k=400, mask=None)
        assert {i for i, _ in got} == {i for i, _ in want}  # the same chunks match
        assert not {"c0001", "c0002"} & {i for i, _ in got}  # deleted: never returned
        scores = dict(want)  # statistics 300 vs 310 chunks: scores move by a few percent
        assert all(s == pytest.approx(scores[i], rel=0.1) for i, s in got)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


def test_the_delta_limit_is_a_share_above_a_floor() -> None:
    assert delta_limit(1_999) == 0 and delta_limit(20_000) == 1_000
    assert delta_limit(100, share=0.25, floor=10) == 25
