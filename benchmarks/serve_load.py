"""Load on `conan-rag serve`: concurrent clients vs one by one, and HTTP vs the in-process encoder.

Starts a server process (``python -m conan_rag.cli serve --port 0``), then, in this process:

* ``concurrent``: ``--clients`` asyncio clients (one ``httpx.AsyncClient``) each send single
  texts to ``/v1/embeddings`` (base64, the openai SDK's default) and wait for each answer before
  sending the next; ``--requests`` texts in all.
* ``sequential``: the same requests, one by one.
* ``batches``: ``--batches`` requests of ``--batch-size`` texts, one by one, over HTTP (base64,
  and float JSON) and through the in-process encoder (``Encoder.encode``) on the same texts;
  each batch goes through the three in turn, so a change of load on the machine hits all alike.

The server and the clients share the machine's cores. Texts are STS Benchmark sentences
(``tests/texts.py``). Prints requests/s and p50/p99 latency, then the two ratios of issue 11's
"Done when": concurrent/sequential throughput (target >= 2.5x) and the HTTP overhead for batches
of 32 over the in-process encoder (target <= 15 %); each figure is the median of ``--runs`` runs.

    python benchmarks/serve_load.py                   # MiniLM, cpu, float32, 32 clients
    python benchmarks/serve_load.py --smoke           # seconds: tiny Conan-layout model
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from conan_rag import load_encoder
from conan_rag.encoder import Encoder
from conan_rag.testing import start_serve_process
from tests.texts import sts_english

REPO = Path(__file__).resolve().parent.parent
START_S = 300


def start_server(args: argparse.Namespace, model: str) -> tuple[subprocess.Popen[str], str]:
    serve = ["--model", model, "--port", "0", "--device", args.device, "--dtype", args.dtype]
    return start_serve_process([*serve, "--log-level", "warning"], cwd=REPO, start_s=START_S)


def decode(body: dict) -> np.ndarray:
    rows = [base64.b64decode(d["embedding"]) for d in body["data"]]
    return np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), -1)


async def post(client: httpx.AsyncClient, url: str, texts: list[str], fmt: str) -> float:
    """Send one request and decode its vectors; seconds taken."""
    start = time.perf_counter()
    response = await client.post(
        f"{url}/v1/embeddings", json={"input": texts, "encoding_format": fmt}
    )
    response.raise_for_status()
    body = response.json()
    if fmt == "base64":
        decode(body)
    else:
        np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    return time.perf_counter() - start


async def clients(
    client: httpx.AsyncClient, url: str, requests: list[list[str]], n: int
) -> tuple[float, list[float]]:
    """Wall seconds for ``requests`` sent by ``n`` concurrent clients, and each one's latency."""
    latencies: list[float] = []

    async def one(mine: list[list[str]]) -> None:
        for texts in mine:
            latencies.append(await post(client, url, texts, "base64"))

    start = time.perf_counter()
    await asyncio.gather(*(one(requests[i::n]) for i in range(n)))
    return time.perf_counter() - start, latencies


def summary(wall: float, latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "wall": wall,
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640, help="single-text requests")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model, few requests")
    args = parser.parse_args()
    model = args.model
    if args.smoke:
        from conan_rag.testing import build_conan_layout_model

        model = str(build_conan_layout_model(tempfile.mkdtemp(), hidden_size=32, num_layers=1))
        args.clients, args.requests, args.batches, args.runs = 4, 16, 2, 1

    singles = sts_english(args.requests)
    pool = sts_english(args.requests + args.batches * args.batch_size)[args.requests :]
    batches = [pool[i : i + args.batch_size] for i in range(0, len(pool), args.batch_size)]
    proc, url = start_server(args, model)
    local = load_encoder(model, device=args.device, dtype=args.dtype)
    print(
        f"model={local.model_id} device={local.device} dtype={local.dtype} cpus={os.cpu_count()} "
        f"clients={args.clients} requests={len(singles)} batches={len(batches)}x{args.batch_size} "
        f"runs={args.runs}"
    )
    try:
        results = asyncio.run(measure(args, url, local, singles, batches))
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    report(results, args)


async def measure(
    args: argparse.Namespace, url: str, local: Encoder, singles: list[str], batches: list[list[str]]
) -> dict[str, dict[str, float]]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    runs: dict[str, list[dict[str, float]]] = {}
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        warm = await client.post(f"{url}/v1/embeddings", json={"input": batches[0]})
        served = np.asarray([d["embedding"] for d in warm.json()["data"]], dtype=np.float32)
        cos = float((served * local.encode(batches[0])).sum(axis=1).min())
        print(f"server vs in-process min cosine: {cos:.6f}")
        await clients(client, url, [[t] for t in singles[: args.clients]], args.clients)
        for _ in range(args.runs):
            one_text = [[t] for t in singles]
            for name, n in (("concurrent", args.clients), ("sequential", 1)):
                runs.setdefault(name, []).append(summary(*await clients(client, url, one_text, n)))
            # Batches: each one through the three paths in turn, so load changes hit all alike.
            latencies: dict[str, list[float]] = {"local": [], "base64": [], "float": []}
            for texts in batches:
                start = time.perf_counter()
                local.encode(texts)
                latencies["local"].append(time.perf_counter() - start)
                for fmt in ("base64", "float"):
                    latencies[fmt].append(await post(client, url, texts, fmt))
            for name, seconds in latencies.items():
                runs.setdefault(f"batch-{name}", []).append(summary(sum(seconds), seconds))
            concurrent, sequential = runs["concurrent"][-1], runs["sequential"][-1]
            local_s = sum(latencies["local"])
            runs.setdefault("ratios", []).append(
                {
                    "speedup": concurrent["rps"] / sequential["rps"],
                    "base64": 100 * (sum(latencies["base64"]) / local_s - 1),
                    "float": 100 * (sum(latencies["float"]) / local_s - 1),
                }
            )
    return {name: median(r) for name, r in runs.items()}


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    labels = {
        "concurrent": f"single texts, {args.clients} concurrent clients",
        "sequential": "single texts, one by one",
        "batch-base64": f"batches of {args.batch_size}, HTTP base64",
        "batch-float": f"batches of {args.batch_size}, HTTP float JSON",
        "batch-local": f"batches of {args.batch_size}, in-process encode",
    }
    for name, label in labels.items():
        r = results[name]
        print(f"{label:<42} {r['rps']:8.1f} req/s  p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms")
    ratios = results["ratios"]
    print(f"concurrent/sequential throughput: {ratios['speedup']:.2f}x (target >= 2.5x)")
    print(
        f"HTTP overhead, batches of {args.batch_size}: base64 {ratios['base64']:+.1f} %, "
        f"float JSON {ratios['float']:+.1f} % (target <= 15 %)"
    )


if __name__ == "__main__":
    main()
