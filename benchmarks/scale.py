"""What each command costs on an N-chunk collection: fresh processes and warm queries.

    python benchmarks/scale.py --chunks 100000              # about 10 minutes on 2 cores
    python benchmarks/scale.py --chunks 20000 --queries 50  # a quick look

Builds an embedded collection of ``--chunks`` chunks with all-MiniLM-L6-v2 (384-d, float32):

* 40 real files (SciFact abstracts from ``data/scifact``) ingested with ``conan-rag ingest``;
* the bulk written through the project's one write path
  (:class:`~conan_rag.rag.ingest.sink.StoreSink`, as ``conan-rag load`` does): texts of three
  SciFact sentences recombined at random, the pipeline's metadata shape (four chunks per
  document), vectors from the encoder for the first ``--encoded`` chunks and random unit vectors
  for the rest. Chroma's insert rate is measured here.

Then prints, each a fresh ``conan-rag`` process (wall time and peak RSS): ``info`` (first, which
builds the catalog, and again), a dense, a lexical and a hybrid query (the first lexical one
builds the BM25 index; then each again), an ingest of one new file, and a ``--prune`` of one
deleted file; then warm in-process query latency (p50 and p99 over ``--queries`` queries) for
dense, lexical and hybrid retrieval, and the store's size on disk.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conan_rag import load_encoder
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.ingest.sink import StoreSink
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions

REPO = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CLI = Path(sys.executable).with_name("conan-rag")
COLLECTION = "scale"


def abstracts(limit: int | None = None) -> list[dict[str, str]]:
    """SciFact abstracts (title and text) from the copy in ``data/scifact``."""
    out = []
    with gzip.open(REPO / "data/scifact/corpus.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            out.append({"title": row.get("title", ""), "text": row["text"]})
            if limit is not None and len(out) >= limit:
                break
    return out


def sentences(rows: list[dict[str, str]]) -> list[str]:
    """Every sentence of the abstracts (split at ``. ``)."""
    return [s for row in rows for s in re.split(r"(?<=\.)\s+", row["text"]) if len(s) > 20]


def write_files(folder: Path, rows: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        (folder / f"abstract{i:03d}.txt").write_text(f"{row['title']}\n\n{row['text']}", "utf-8")


def bulk_metadata(i: int) -> dict[str, object]:
    """The pipeline's chunk metadata shape, four chunks per synthetic document."""
    doc = i // 4
    meta: dict[str, object] = {
        "source": f"/bulk/doc{doc}.txt",
        "doc_id": f"/bulk/doc{doc}.txt",
        "doc_key": f"/bulk/doc{doc}.txt",
        "title": f"Bulk document {doc}",
        "doc_hash": f"{doc:040x}",
        "chunk": i % 4,
    }
    if i % 4 == 0:
        meta["n_chunks"] = 4
    return meta


def add_bulk(pipe: Pipeline, count: int, pool: list[str], encoded: int, seed: int = 0) -> float:
    """Write ``count`` synthetic chunks through the write path; returns chunks per second."""
    rng = random.Random(seed)
    vectors_rng = np.random.default_rng(seed)
    sink = StoreSink(pipe.store, pipe.upsert_batch)
    step = pipe.upsert_batch
    writing = 0.0  # seconds spent in the store's writes only (not embedding the sample)
    for first in range(0, count, step):
        n = min(step, count - first)
        texts = [" ".join(rng.sample(pool, 3)) for _ in range(n)]
        if first < encoded:
            vectors = pipe.encoder.encode(texts, kind="document")
        else:
            vectors = vectors_rng.standard_normal((n, pipe.encoder.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"bulk-{first + j}" for j in range(n)]
        metas = [bulk_metadata(first + j) for j in range(n)]
        start = time.perf_counter()
        sink.upsert(ids, vectors, texts, metas)
        writing += time.perf_counter() - start
        print(f"  bulk {first + n:,}/{count:,}", end="\r", file=sys.stderr)
    sink.finish(IngestReport())
    return count / max(writing, 1e-9)


def fresh(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run one ``conan-rag`` process; its wall seconds and peak RSS (GB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(CLI), *args], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"conan-rag {' '.join(args)} failed")
    return wall, usage.ru_maxrss / 1024 / 1024


def warm(pipe: Pipeline, queries: list[str], mode: str) -> tuple[float, float]:
    """p50 and p99 (ms) of in-process retrieval, one query at a time, after one warm-up."""
    options = RetrievalOptions(k=10, retrieval=mode)
    pipe.retrieve(queries[0], options)
    times = []
    for query in queries:
        start = time.perf_counter()
        pipe.retrieve(query, options)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def disk_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9


def measure_commands(work: Path, env: dict[str, str]) -> list[tuple[str, float, float]]:
    db = ["--db", str(work / "db"), "--collection", COLLECTION, "--no-progress"]
    query = "Which protein regulates cell apoptosis in tumours?"
    rows = []
    for label, args in [
        ("info (first: builds the catalog)", ["info", *db]),
        ("info", ["info", *db]),
        ("query dense", ["query", query, *db]),
        ("query lexical (first: builds BM25)", ["query", query, "--retrieval", "lexical", *db]),
        ("query lexical", ["query", query, "--retrieval", "lexical", *db]),
        ("query hybrid", ["query", query, "--retrieval", "hybrid", *db]),
    ]:
        rows.append((label, *fresh(args, env)))
    (work / "one").mkdir()
    (work / "one" / "new.txt").write_text("Quartz crystals are made of silicon dioxide.", "utf-8")
    rows.append(("ingest one new file", *fresh(["ingest", str(work / "one"), *db], env)))
    rows.append(
        ("query hybrid after it", *fresh(["query", query, "--retrieval", "hybrid", *db], env))
    )
    (work / "docs" / "abstract000.txt").unlink()
    rows.append(
        (
            "ingest --prune, one file gone",
            *fresh(["ingest", str(work / "docs"), "--prune", *db], env),
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--encoded", type=int, default=2000, help="bulk chunks the model embeds")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="conan-scale-"))
    rows = abstracts()
    env = {**os.environ, "CONAN_RAG_MODEL": MINILM}
    encoder = load_encoder(MINILM, device="cpu", dtype="float32")
    write_files(work / "docs", rows[:40])
    fresh(
        [
            "ingest",
            str(work / "docs"),
            "--db",
            str(work / "db"),
            "--collection",
            COLLECTION,
            "--no-progress",
        ],
        env,
    )
    pipe = Pipeline(encoder, db=work / "db", collection=COLLECTION)
    rate = add_bulk(pipe, args.chunks - pipe.store.count(), sentences(rows), args.encoded)
    total = pipe.store.count()
    print(
        f"\n{total:,} chunks, 384-d float32; Chroma insert rate {rate:,.0f} chunks/s "
        f"(through StoreSink, batches of {pipe.upsert_batch})"
    )
    del pipe
    table = measure_commands(work, env)
    print(f"\n| fresh process, {total:,} chunks | wall s | peak RSS GB |\n|---|---|---|")
    for label, wall, rss in table:
        print(f"| `conan-rag {label}` | {wall:.1f} | {rss:.2f} |")
    pipe = Pipeline(encoder, db=work / "db", collection=COLLECTION)
    queries = [row["title"] for row in rows[100 : 100 + args.queries]]
    print(f"\n| warm, in process, {len(queries)} queries | p50 ms | p99 ms |\n|---|---|---|")
    for mode in ("dense", "lexical", "hybrid"):
        p50, p99 = warm(pipe, queries, mode)
        print(f"| {mode} | {p50:.1f} | {p99:.1f} |")
    print(f"\nstore on disk: {disk_gb(work / 'db'):.2f} GB ({work / 'db'})")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
