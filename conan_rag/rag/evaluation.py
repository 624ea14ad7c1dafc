"""BEIR data and retrieval metrics (nDCG, MAP, MRR, recall), computed as ``pytrec_eval`` does.

Metrics follow trec_eval: a run is ranked by decreasing score, ties by decreasing document id;
a document is relevant when its qrels grade is >= 1; nDCG's gain is the grade; MAP@k divides by
all relevant documents of the query; MRR@k is the reciprocal rank of the first relevant document
in the top k (0 when none). Scores average over the queries of the qrels.

Example:
    >>> qrels = {"q1": {"d1": 1, "d3": 1}}
    >>> run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}}
    >>> m = evaluate(qrels, run)
    >>> round(m["ndcg@10"], 4), m["mrr@10"], m["recall@10"]
    (0.9197, 1.0, 1.0)
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conan_rag.errors import ConanConfigError
from conan_rag.rag.search.retrieval import RetrievalOptions
from conan_rag.rag.sources.documents import Document

if TYPE_CHECKING:
    from conan_rag.rag.pipeline import Pipeline
    from conan_rag.rag.store.protocol import VectorStore

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]
METRICS = ("ndcg@10", "map@10", "mrr@10", "recall@10", "recall@100")
SWEEP_NOTE = "threshold_sweep"  # the store note holding the last evaluation's sweep


@dataclass
class BeirData:
    """A BEIR dataset split: corpus (id → title/text), queries (id → text), qrels."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _first_existing(folder: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ConanConfigError(
        f"{folder} is not a BEIR dataset folder: none of {list(names)} exists. A BEIR folder "
        "holds corpus.jsonl(.gz), queries.jsonl(.gz) and qrels/<split>.tsv."
    )


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Read a BEIR folder; only the queries the split's qrels judge are kept.

    Raises:
        ConanConfigError: a file is missing (the message names the expected layout).
    """
    folder = Path(folder)
    corpus_path = _first_existing(folder, ["corpus.jsonl", "corpus.jsonl.gz"])
    queries_path = _first_existing(folder, ["queries.jsonl", "queries.jsonl.gz"])
    qrels_path = _first_existing(folder / "qrels", [f"{split}.tsv"])
    qrels: Qrels = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or not row[2].lstrip("-").isdigit():
                continue  # the header line
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    corpus = {
        str(row["_id"]): {"title": str(row.get("title") or ""), "text": str(row.get("text") or "")}
        for row in _read_jsonl(corpus_path)
    }
    queries = {str(row["_id"]): str(row["text"]) for row in _read_jsonl(queries_path)}
    queries = {qid: queries[qid] for qid in qrels if qid in queries}
    return BeirData(folder.name, corpus, queries, qrels)


def subset(data: BeirData, limit_docs: int | None, limit_queries: int | None) -> BeirData:
    """A small, self-consistent subset of a BEIR split.

    It keeps the first ``limit_queries`` queries, all their relevant documents, then the
    corpus's first documents up to ``limit_docs``.

    Example:
        >>> d = BeirData("t", {"a": {}, "b": {}, "c": {}}, {"q": "x", "r": "y"},
        ...              {"q": {"c": 1}, "r": {"b": 1}})
        >>> s = subset(d, 2, 1)
        >>> sorted(s.corpus), list(s.queries)
        (['a', 'c'], ['q'])
    """
    qids = list(data.queries)[: limit_queries or None]
    qrels = {q: {d: r for d, r in data.qrels[q].items() if d in data.corpus} for q in qids}
    keep: dict[str, None] = {}
    for q in qids:
        keep.update((d, None) for d in qrels[q])
    for doc_id in data.corpus:
        if limit_docs is not None and len(keep) >= limit_docs:
            break
        keep.setdefault(doc_id, None)
    corpus = {d: data.corpus[d] for d in data.corpus if d in keep}
    return BeirData(data.name, corpus, {q: data.queries[q] for q in qids}, qrels)


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Document ids by decreasing score, ties by decreasing id (trec_eval's order)."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def query_metrics(relevance: Mapping[str, int], scores: Mapping[str, float]) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one query."""
    order = ranked(scores)
    relevant = {d for d, r in relevance.items() if r >= 1}
    grades = sorted((r for r in relevance.values() if r > 0), reverse=True)
    out: dict[str, float] = {}
    dcg = sum(
        relevance.get(d, 0) / math.log2(i + 2)
        for i, d in enumerate(order[:10])
        if relevance.get(d, 0) > 0
    )
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:10]))
    out["ndcg@10"] = dcg / idcg if idcg > 0 else 0.0
    hits, precision_sum, first = 0, 0.0, 0.0
    for i, doc in enumerate(order[:10]):
        if doc in relevant:
            hits += 1
            precision_sum += hits / (i + 1)
            first = first or 1.0 / (i + 1)
    out["map@10"] = precision_sum / len(relevant) if relevant else 0.0
    out["mrr@10"] = first
    for k in (10, 100):
        found = sum(1 for d in order[:k] if d in relevant)
        out[f"recall@{k}"] = found / len(relevant) if relevant else 0.0
    return out


def evaluate(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean of each metric over the judged queries (a query missing from ``run`` scores 0)."""
    totals = dict.fromkeys(METRICS, 0.0)
    for qid, relevance in qrels.items():
        for name, value in query_metrics(relevance, run.get(qid, {})).items():
            totals[name] += value
    return {name: total / max(1, len(qrels)) for name, total in totals.items()}


def threshold_sweep(qrels: Qrels, run: Run, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Micro-averaged precision, recall and F1 of "every document scoring >= t" per threshold.

    Recall counts against all judged-relevant documents, so it is bounded by the run's depth.
    Where no document scores ``>= t``, precision and F1 are undefined: they are ``nan`` (plots
    leave a gap; JSON output writes ``null``).

    Example:
        >>> threshold_sweep({"q": {"a": 1}}, {"q": {"a": 0.8, "b": 0.3}}, [0.5])[0]["f1"]
        1.0
    """
    total_relevant = sum(sum(1 for r in rel.values() if r >= 1) for rel in qrels.values())
    rows = []
    for t in thresholds:
        retrieved = correct = 0
        for qid, relevance in qrels.items():
            for doc, score in run.get(qid, {}).items():
                if score >= t:
                    retrieved += 1
                    correct += relevance.get(doc, 0) >= 1
        precision = correct / retrieved if retrieved else math.nan
        recall = correct / total_relevant if total_relevant else 0.0
        if not retrieved:
            f1 = math.nan
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "threshold": t,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "retrieved": float(retrieved),
            }
        )
    return rows


def sweep_json(rows: Sequence[Mapping[str, float]]) -> list[dict[str, float | None]]:
    """Sweep rows for JSON: an undefined precision or F1 (nothing kept) is ``None``.

    Example:
        >>> sweep_json([{"threshold": 0.9, "precision": math.nan, "retrieved": 0.0}])
        [{'threshold': 0.9, 'precision': None, 'retrieved': 0.0}]
    """
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]


def record_sweep(
    store: VectorStore, rows: Sequence[Mapping[str, float]], about: Mapping[str, Any]
) -> None:
    """Keep a threshold sweep with the collection it was measured on (the search page draws it).

    Args:
        store: the evaluated collection.
        rows: :func:`threshold_sweep`'s rows.
        about: what was measured: dataset, split, model, retrieval mode.
    """
    store.write_note(SWEEP_NOTE, json.dumps({**about, "rows": sweep_json(rows)}))


def recorded_sweep(store: VectorStore) -> dict[str, Any] | None:
    """The sweep :func:`record_sweep` kept with the collection (``None``: none, or unreadable)."""
    text = store.note(SWEEP_NOTE)
    try:
        sweep = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return sweep if isinstance(sweep, dict) and isinstance(sweep.get("rows"), list) else None


def parse_range(spec: str) -> list[float]:
    """``"START:STOP:STEP"`` (STOP included) → thresholds.

    Example:
        >>> parse_range("0.2:0.3:0.05")
        [0.2, 0.25, 0.3]
    """
    try:
        start, stop, step = (float(x) for x in spec.split(":"))
    except ValueError:
        raise ConanConfigError(
            f"Threshold range {spec!r} is not START:STOP:STEP, e.g. 0.2:0.8:0.05."
        ) from None
    if step <= 0 or stop < start:
        raise ConanConfigError(f"Threshold range {spec!r} needs STEP > 0 and STOP >= START.")
    count = math.floor((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 10) for i in range(count)]


def plot_sweep(rows: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Write a PNG of precision, recall and F1 against the threshold.

    Raises:
        ImportError: matplotlib is not installed (``pip install matplotlib``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("The threshold plot needs matplotlib: pip install matplotlib") from exc
    xs = [r["threshold"] for r in rows]
    # A bare Figure renders with Agg without touching pyplot's global backend (e.g. in Jupyter).
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    for name in ("precision", "recall", "f1"):
        ax.plot(xs, [r[name] for r in rows], marker="o", markersize=3, label=name)
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("micro-averaged value")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "Threshold sweep")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def run_from_hits(hits: Iterable[tuple[str, str, float]], depth: int = 100) -> Run:
    """Aggregate (query id, document id, score) chunk hits to documents by best chunk."""
    run: Run = {}
    for qid, doc_id, score in hits:
        docs = run.setdefault(qid, {})
        if score > docs.get(doc_id, -math.inf):
            docs[doc_id] = score
    return {q: {d: docs[d] for d in ranked(docs)[:depth]} for q, docs in run.items()}


def beir_documents(data: BeirData) -> list[Document]:
    """The corpus as :class:`~conan_rag.rag.sources.Document` objects (source ``beir:<name>``)."""
    source = f"beir:{data.name}"
    return [Document(d, row["text"], source, row["title"]) for d, row in data.corpus.items()]


def beir_run(
    pipeline: Pipeline,
    data: BeirData,
    depth: int = 100,
    show_progress: bool = False,
    retrieval: str = "dense",
    reranker: str | None = None,
    rerank_top: int = 20,
) -> Run:
    """Retrieve every query through ``pipeline`` and rank documents by their best chunk.

    Fetches ``3 * depth`` chunks per query (exactly re-scored), enough for ``depth`` documents
    when documents have a few chunks each. Dense runs rank by cosine; lexical and hybrid runs
    by their fused (reciprocal-rank) order; with a ``reranker``, its ``rerank_top`` best chunks
    come first, in its order. Documents are ranked by the position of their best chunk.
    """
    qids = list(data.queries)
    options = RetrievalOptions(
        k=3 * depth,
        fetch_k=3 * depth,
        retrieval=retrieval,
        reranker=reranker,
        rerank_top=rerank_top,
    )
    results = pipeline.retrieve_many(
        [data.queries[q] for q in qids], options, show_progress=show_progress
    )
    pairs = zip(qids, results, strict=True)
    # Hits come best first in every mode (cosine, fused rank, cross-encoder): rank by position.
    hits = (
        (q, str(h.metadata["doc_id"]), -float(n)) for q, res in pairs for n, h in enumerate(res)
    )
    return run_from_hits(hits, depth)
