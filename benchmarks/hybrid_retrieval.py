"""Dense vs lexical (BM25) vs hybrid retrieval, through the pipeline, on SciFact and on Chinese.

    python benchmarks/hybrid_retrieval.py                      # MiniLM, float32, full SciFact
    python benchmarks/hybrid_retrieval.py --smoke              # seconds: small subsets

Two evaluations, each with the three ``retrieval`` modes of ``RetrievalOptions``:

* SciFact (BEIR, ``data/scifact``): chunks in an embedded Chroma store, documents ranked by their
  best chunk, as ``conan-rag eval --beir data/scifact --retrieval MODE`` does.
* A Chinese check built from STS-B zh (``data/sts/stsb-zh.test.tsv``): every pair scored >= 4
  (near paraphrases) makes its first sentence a query and its second the one relevant document;
  the corpus is every pair's second sentence (so the rest are distractors).

Then the query latency of hybrid over dense on the SciFact collection: the same queries one at a
time, median of per-query times (target <= 1.5x). Prints nDCG@10 and recall@100 per mode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conan_rag import load_encoder
from conan_rag.rag.evaluation import BeirData, beir_documents, beir_run, evaluate, load_beir, subset
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.retrieval import RETRIEVAL_MODES, RetrievalOptions

REPO = Path(__file__).resolve().parent.parent


def sts_zh_retrieval(path: Path, min_score: float = 4.0, limit: int | None = None) -> BeirData:
    """A retrieval task from STS-B zh pairs: s1 asks for s2 (see the module docstring)."""
    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines[:limit] if limit else lines):
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        first, second, score = parts[0].strip(), parts[1].strip(), float(parts[2])
        corpus[f"d{n}"] = {"title": "", "text": second}
        if score >= min_score:
            queries[f"q{n}"] = first
            qrels[f"q{n}"] = {f"d{n}": 1}
    return BeirData(name="stsb-zh-retrieval", corpus=corpus, queries=queries, qrels=qrels)


def evaluate_modes(pipe: Pipeline, data: BeirData) -> dict[str, dict[str, float]]:
    """nDCG@10 and recall@100 of each retrieval mode."""
    pipe.sync(beir_documents(data))
    rows = {}
    for mode in RETRIEVAL_MODES:
        metrics = evaluate(data.qrels, beir_run(pipe, data, retrieval=mode))
        rows[mode] = {k: metrics[k] for k in ("ndcg@10", "recall@100")}
    return rows


def latency(pipe: Pipeline, queries: list[str], mode: str) -> float:
    """Median seconds of one query (k=10), one query at a time."""
    options = RetrievalOptions(k=10, retrieval=mode)
    pipe.retrieve(queries[0], options)  # warm: the lexical index is loaded here
    times = []
    for query in queries:
        start = time.perf_counter()
        pipe.retrieve(query, options)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--beir", default=str(REPO / "data/scifact"))
    parser.add_argument("--sts-zh", default=str(REPO / "data/sts/stsb-zh.test.tsv"))
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="small subsets (seconds)")
    args = parser.parse_args()

    encoder = load_encoder(args.model, device=args.device, dtype=args.dtype)
    print(f"model={encoder.model_id} device={encoder.device} dtype={encoder.dtype}")
    scifact = load_beir(args.beir)
    chinese = sts_zh_retrieval(Path(args.sts_zh), limit=200 if args.smoke else None)
    if args.smoke:
        scifact = subset(scifact, 60, 20)
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for data in (scifact, chinese):
            pipe = Pipeline(encoder, db=Path(folder) / data.name, collection="bench")
            results[data.name] = evaluate_modes(pipe, data)
            print(f"{data.name}: {len(data.corpus)} docs, {len(data.queries)} queries")
            for mode, metrics in results[data.name].items():
                shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                print(f"  {mode:<8} {shown}")
            if data is scifact:
                queries = list(data.queries.values())[: args.latency_queries]
                dense = latency(pipe, queries, "dense")
                hybrid = latency(pipe, queries, "hybrid")
                print(
                    f"  latency per query (median of {len(queries)}): dense {dense * 1e3:.1f} ms, "
                    f"hybrid {hybrid * 1e3:.1f} ms, hybrid/dense {hybrid / dense:.2f}x "
                    "(target <= 1.5x)"
                )


if __name__ == "__main__":
    main()
