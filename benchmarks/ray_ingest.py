"""Ingest throughput: the single-process ingest vs the Ray ingest, same corpus, same machine.

SciFact abstracts (``title`` as a heading, then ``text``) are written as Markdown files and
ingested into a fresh embedded store by each variant in turn; every Ray run starts and stops its
own local runtime, so Ray's start-up is part of its figure (and is also timed on its own). The
table shows chunks per second and the ratio of each Ray run's wall time to the single-process
run's (the "overhead": on one machine there is nothing to parallelise onto, so it shows the
engine's cost). The script checks every run embedded the same number of chunks (that the
collections are equal is what tests/rag/ingest/test_ray_engine.py checks).

Variants:
    single   Pipeline.ingest in this process (torch threads: all cores)
    ray1     one encoder actor, given all cores' threads
    ray2     two encoder actors, one thread each

Usage:
    python benchmarks/ray_ingest.py                       # 2,000 abstracts, dtype auto
    python benchmarks/ray_ingest.py --n 5183 --runs 3     # the whole corpus, median of 3
    python benchmarks/ray_ingest.py --smoke               # 16 abstracts, one round (CI check)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from conan_rag import load_encoder  # noqa: E402
from conan_rag.model.files import BUNDLED_MINILM  # noqa: E402
from conan_rag.rag.ingest.ray import RayEngine  # noqa: E402
from conan_rag.rag.pipeline import Pipeline  # noqa: E402

CORPUS = ROOT / "data" / "scifact" / "corpus.jsonl.gz"
VARIANTS = ("single", "ray1", "ray2")


def write_corpus(folder: Path, n: int) -> int:
    """``n`` SciFact abstracts as Markdown files; returns their characters."""
    chars = 0
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for _, line in zip(range(n), fh):
            row = json.loads(line)
            text = f"# {row['title']}\n\n{row['text']}\n"
            (folder / f"{row['_id']}.md").write_text(text, encoding="utf-8")
            chars += len(text)
    return chars


def engine_for(variant: str, threads: int) -> RayEngine | None:
    if variant == "single":
        return None
    encoders = int(variant.removeprefix("ray"))
    return RayEngine(
        address="local",
        encoders=encoders,
        threads_per_encoder=max(1, threads // encoders),
        num_cpus=max(threads, encoders),
    )


def ray_startup_s() -> float:
    """Seconds to start and stop a local Ray runtime (nothing run on it)."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray.shutdown()
    return time.perf_counter() - start


def run_once(variant: str, docs: Path, model: str, dtype: str, threads: int) -> tuple[float, int]:
    """Wall seconds of one ingest into a fresh store (model load excluded), and its chunks."""
    encoder = load_encoder(model, dtype=dtype)
    with tempfile.TemporaryDirectory() as db:
        pipe = Pipeline(encoder, db=db)
        start = time.perf_counter()
        report = pipe.ingest([docs], engine=engine_for(variant, threads))
        seconds = time.perf_counter() - start
        if report.skipped or not report.chunks_embedded:
            raise SystemExit(f"{variant}: unexpected report {report}")
        return seconds, report.chunks_embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="SciFact abstracts (max 5183)")
    parser.add_argument("--runs", type=int, default=1, help="rounds (median reported)")
    parser.add_argument("--model", default=BUNDLED_MINILM)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--smoke", action="store_true", help="16 abstracts, single and ray1")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.runs, args.variants = 16, 1, "single,ray1"
    variants = [v for v in args.variants.split(",") if v]
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {v: [] for v in variants}
    chunks: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        chars = write_corpus(docs, args.n)
        startup = ray_startup_s()
        for round_ in range(args.runs):
            for variant in variants[round_ % len(variants) :] + variants[: round_ % len(variants)]:
                seconds, chunks[variant] = run_once(variant, docs, args.model, args.dtype, threads)
                times[variant].append(seconds)
                print(f"  round {round_ + 1}: {variant:<6} {seconds:7.1f} s", flush=True)
    if len(set(chunks.values())) != 1:
        raise SystemExit(f"variants embedded different chunk counts: {chunks}")
    n_chunks = next(iter(chunks.values()))
    cpu = os.cpu_count()
    print(
        f"\n{args.n} SciFact abstracts ({chars:,} chars, {n_chunks:,} chunks), model "
        f"{args.model}, dtype {args.dtype}, {cpu} CPUs, torch threads {threads}; "
        f"median of {args.runs}"
    )
    print(f"Ray local runtime start + stop alone: {startup:.1f} s\n")
    print(f"{'variant':<8} {'seconds':>8} {'chunks/s':>9} {'x single':>9}")
    base = statistics.median(times["single"]) if "single" in times else None
    for variant in variants:
        seconds = statistics.median(times[variant])
        ratio = f"{seconds / base:8.2f}x" if base else "       -"
        print(f"{variant:<8} {seconds:8.1f} {n_chunks / seconds:9.1f} {ratio}")


if __name__ == "__main__":
    main()
