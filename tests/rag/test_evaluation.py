"""Metrics agree with pytrec_eval to 1e-6; BEIR loading, subsets, sweeps and an eval run."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import pytrec_eval

from conan_rag.errors import ConanConfigError
from conan_rag.rag.evaluation import (
    evaluate,
    load_beir,
    parse_range,
    plot_sweep,
    query_metrics,
    ranked,
    run_from_hits,
    subset,
    threshold_sweep,
)


def _random_case(seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(40):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 12))}
        if q % 7 == 0:
            qrels[qid] = {d: 0 for d in qrels[qid]} | {docs[q]: 1}
        picked = rng.sample(docs, rng.randint(5, 120))
        # coarse scores force ties, which trec_eval breaks by decreasing document id
        run[qid] = {d: round(rng.random(), 1) for d in picked}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_pytrec_eval(seed: int) -> None:
    qrels, run = _random_case(seed)
    measures = {"ndcg_cut.10", "map_cut.10", "recall.10,100", "recip_rank"}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    top10 = {
        q: {d: s for d, s in docs.items() if d in ranked(docs)[:10]} for q, docs in run.items()
    }
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for qid in qrels:
        ours = query_metrics(qrels[qid], run[qid])
        assert ours["ndcg@10"] == pytest.approx(full[qid]["ndcg_cut_10"], abs=1e-6)
        assert ours["map@10"] == pytest.approx(full[qid]["map_cut_10"], abs=1e-6)
        assert ours["recall@10"] == pytest.approx(full[qid]["recall_10"], abs=1e-6)
        assert ours["recall@100"] == pytest.approx(full[qid]["recall_100"], abs=1e-6)
        assert ours["mrr@10"] == pytest.approx(mrr[qid]["recip_rank"], abs=1e-6)
    means = evaluate(qrels, run)
    assert means["ndcg@10"] == pytest.approx(
        sum(v["ndcg_cut_10"] for v in full.values()) / len(full), abs=1e-6
    )


def test_ties_follow_trec_eval_order() -> None:
    assert ranked({"a": 0.5, "c": 0.5, "b": 0.9}) == ["b", "c", "a"]


def test_load_beir_subset_and_run(data_dir: Path) -> None:
    data = load_beir(data_dir / "scifact")
    assert len(data.corpus) == 5183 and len(data.queries) == 300
    small = subset(data, 300, 20)
    assert len(small.queries) == 20 and len(small.corpus) == 300
    assert all(d in small.corpus for rel in small.qrels.values() for d in rel)
    run = run_from_hits([("q", "a", 0.2), ("q", "a", 0.7), ("q", "b", 0.5)], depth=1)
    assert run == {"q": {"a": 0.7}}
    with pytest.raises(ConanConfigError, match="BEIR"):
        load_beir(data_dir)


def test_threshold_sweep_and_plot(tmp_path: Path) -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"a": 0.9, "x": 0.6, "b": 0.3}, "q2": {"c": 0.7, "y": 0.2}}
    rows = threshold_sweep(qrels, run, parse_range("0.25:0.85:0.3"))
    assert [r["threshold"] for r in rows] == [0.25, 0.55, 0.85]
    assert rows[0]["precision"] == pytest.approx(3 / 4) and rows[0]["recall"] == 1.0
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["recall"] == pytest.approx(
        2 / 3
    )
    assert rows[2]["retrieved"] == 1 and rows[2]["f1"] == pytest.approx(0.5)
    (empty,) = threshold_sweep(qrels, run, [0.95])
    assert empty["retrieved"] == 0 and empty["recall"] == 0.0
    assert math.isnan(empty["precision"]) and math.isnan(empty["f1"])  # undefined, not 0
    import matplotlib

    backend = matplotlib.get_backend()
    png = plot_sweep(rows, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend  # plotting leaves the user's backend alone
    with pytest.raises(ConanConfigError, match="START:STOP:STEP"):
        parse_range("0.2-0.8")
