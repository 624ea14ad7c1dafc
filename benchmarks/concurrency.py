"""Many threads sending single queries: the batching queue vs one forward per request.

32 client threads each send single STS sentences (``data/sts/stsbenchmark-test.csv``) as
queries and wait for the answer before sending the next. Three ways to serve them from one
shared backend:

* ``queue``: ``Encoder.encode`` through the batching queue (the default): one worker coalesces
  concurrent requests into length-sorted token-budget batches.
* ``lock``: ``EncoderConfig(use_queue=False)``: each request runs its own forward pass under the
  backend's lock, no coalescing (what a thread-safe encoder without a queue does).
* ``one batch``: every query in a single ``encode`` call: the throughput ceiling.

Prints throughput and p50/p99 latency (median of ``--runs`` runs) and the queue/lock ratios.

    python benchmarks/concurrency.py                 # MiniLM on cpu, 640 queries, 32 clients
    python benchmarks/concurrency.py --smoke         # seconds: tiny Conan-layout model
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from conan_rag import load_encoder
from conan_rag.encoder import Encoder

DATA = Path(__file__).resolve().parent.parent / "data"


def sts_queries(n: int) -> list[str]:
    """The first ``n`` STS Benchmark test sentences (columns s1, s2), repeats allowed."""
    out: list[str] = []
    for line in (DATA / "sts" / "stsbenchmark-test.csv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 7:
            out += [cols[5], cols[6]]
        if len(out) >= n:
            break
    return out[:n]


def run_clients(encoder: Encoder, queries: list[str], clients: int) -> tuple[float, list[float]]:
    """Wall seconds for all queries and each request's latency (seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(mine: list[str]) -> None:
        local = []
        barrier.wait()
        for text in mine:
            start = time.perf_counter()
            encoder.encode([text], kind="query")
            local.append(time.perf_counter() - start)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=client, args=(queries[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies


def measure(encoder: Encoder, queries: list[str], clients: int) -> dict[str, float]:
    wall, latencies = run_clients(encoder, queries, clients)
    ms = np.asarray(latencies) * 1000
    return {
        "qps": len(queries) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=640)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--wait-ms", type=float, default=2.0)
    parser.add_argument("--smoke", action="store_true", help="tiny model, few queries")
    args = parser.parse_args()
    model = args.model
    if args.smoke:
        from conan_rag.testing import build_conan_layout_model

        model = str(build_conan_layout_model(tempfile.mkdtemp(), hidden_size=32, num_layers=1))
        args.queries, args.clients, args.runs = min(args.queries, 32), min(args.clients, 4), 1

    queries = sts_queries(args.queries)
    common = {"device": args.device, "dtype": args.dtype}
    queued = load_encoder(model, use_queue=True, batch_wait_ms=args.wait_ms, **common)
    locked = load_encoder(model, use_queue=False, **common)
    assert queued.backend is locked.backend, "both modes must share one backend"
    print(
        f"model={queued.model_id} device={queued.device} dtype={queued.dtype} "
        f"torch_threads={__import__('torch').get_num_threads()} cpus={os.cpu_count()} "
        f"queries={len(queries)} clients={args.clients} wait_ms={args.wait_ms} runs={args.runs}"
    )
    check = queued.encode(queries[:16], kind="query")  # warm up both paths, check equality
    cos = (check * locked.encode(queries[:16], kind="query")).sum(axis=1).min()
    print(f"queue vs lock min cosine: {cos:.6f}")

    results: dict[str, list[dict[str, float]]] = {"lock": [], "queue": [], "one batch": []}
    for _ in range(args.runs):  # interleave modes so machine noise hits them alike
        results["lock"].append(measure(locked, queries, args.clients))
        results["queue"].append(measure(queued, queries, args.clients))
        start = time.perf_counter()
        queued.encode(queries, kind="query")
        results["one batch"].append({"qps": len(queries) / (time.perf_counter() - start)})

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print(f"{'mode':<10} {'queries/s':>10} {'p50 ms':>9} {'p99 ms':>9}   (median of {args.runs})")
    for mode in ("lock", "queue"):
        print(
            f"{mode:<10} {median(mode, 'qps'):>10.1f} {median(mode, 'p50'):>9.1f} "
            f"{median(mode, 'p99'):>9.1f}"
        )
    print(f"{'one batch':<10} {median('one batch', 'qps'):>10.1f}")
    speedup = median("queue", "qps") / median("lock", "qps")
    p99 = median("queue", "p99") / median("lock", "p99")
    ceiling = median("queue", "qps") / median("one batch", "qps")
    print(f"queue/lock throughput: {speedup:.2f}x   queue/lock p99: {p99:.2f}x")
    print(f"queue reaches {ceiling:.0%} of the one-batch ceiling")
    print("per-run queries/s:", {m: [round(r["qps"], 1) for r in rs] for m, rs in results.items()})


if __name__ == "__main__":
    main()
