"""GPU throughput on Conan-embedding-v1's shape: conan-rag vs sentence-transformers fp32 / fp16.

Builds a random-weight model with Conan's exact shape and layout (BERT-large: 24 layers, hidden
1024, 16 heads, FFN 4096, 21k-token vocab, 1024 -> 1792 Dense), embeds mixed-length texts
(SciFact abstracts + short SciFact claims) and prints, per system: tokens/s, min cosine vs
sentence-transformers fp32, achieved fraction of the GPU's bf16 dense peak, and peak GPU memory.

* conan-rag: ``load_encoder(dtype=...)`` for each ``--dtype`` (default ``auto``: bf16 on CUDA),
  unpadded varlen forward on CUDA, batching queue. Rows are labelled ``conan-<dtype>``.
* sentence-transformers fp32 with its defaults, and fp16 (``model_kwargs={"dtype": fp16}``).

FLOPs = 2 x (transformer matmul parameters) x tokens + attention (4 x hidden x sum(len^2) per
layer), counted on real tokens only: padding computed by a system is waste, not work.

    python benchmarks/gpu_throughput.py                  # one GPU, < 5 minutes
    python benchmarks/gpu_throughput.py --peak-tflops 989
    python benchmarks/gpu_throughput.py --dtype bfloat16 float16
    python benchmarks/gpu_throughput.py --smoke          # tiny model on cpu, seconds
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from conan_rag import load_encoder
from conan_rag.registry import clear_registry
from conan_rag.runtime.devices import resolve_device, resolve_dtype
from conan_rag.testing import build_conan_layout_model

DATA = Path(__file__).resolve().parent.parent / "data"

# bf16 dense tensor-core peaks (TFLOPS, no sparsity), matched against torch's device name.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("V100", 125.0),  # fp16: V100 has no bf16
    ("T4", 65.0),  # fp16
]


def peak_tflops(name: str) -> float | None:
    """The table's bf16 dense peak for a device name, or ``None`` if it is not listed."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


def scifact_texts(n_docs: int, n_queries: int) -> list[str]:
    """``n_docs`` abstracts (title + text) and ``n_queries`` claims, interleaved."""
    docs: list[str] = []
    with gzip.open(DATA / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            docs.append(f"{row.get('title', '')}\n{row['text']}".strip())
            if len(docs) >= n_docs:
                break
    queries: list[str] = []
    with open(DATA / "scifact" / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            queries.append(json.loads(line)["text"])
            if len(queries) >= n_queries:
                break
    mixed: list[str] = []
    step = max(1, len(docs) // max(1, len(queries)))
    for i, doc in enumerate(docs):
        mixed.append(doc)
        if i % step == 0 and queries:
            mixed.append(queries.pop())
    return mixed + queries


def model_flops(config: object, lengths: list[int]) -> float:
    """Forward FLOPs on real tokens: dense matmuls plus attention scores and mixing."""
    hidden = int(config.hidden_size)  # type: ignore[attr-defined]
    inter = int(config.intermediate_size)  # type: ignore[attr-defined]
    layers = int(config.num_hidden_layers)  # type: ignore[attr-defined]
    per_token_params = layers * (4 * hidden * hidden + 2 * hidden * inter)
    tokens = sum(lengths)
    attention = layers * 4 * hidden * sum(n * n for n in lengths)
    return 2.0 * per_token_params * tokens + attention


def timed(fn: Callable[[], np.ndarray], device: torch.device) -> tuple[np.ndarray, float, float]:
    """Run once; return the output, seconds and peak GPU memory since the last reset (GiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return out, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--docs", type=int, default=5183, help="SciFact abstracts (all: 5183)")
    parser.add_argument("--queries", type=int, default=1109, help="SciFact claims (all: 1109)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the table")
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers'")
    parser.add_argument("--skip-st", action="store_true", help="only conan-rag")
    parser.add_argument(
        "--dtype", nargs="+", default=["auto"], help="conan-rag dtypes to run (default: auto)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model and few texts")
    parser.add_argument(
        "--forward",
        choices=["auto", "varlen", "padded"],
        default=None,
        help="conan-rag's forward (auto: varlen on CUDA for BERT; --smoke: varlen)",
    )
    parser.add_argument("--keep", default=None, help="build/reuse the model in this folder")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)
    n_cjk = 20000
    if args.smoke:
        shape = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256)
        n_cjk, args.docs, args.queries = 500, min(args.docs, 16), min(args.queries, 8)
        args.forward = args.forward or "varlen"  # exercise the unpadded path on cpu too

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="conan-shape-"))
    start = time.perf_counter()
    if not (folder / "modules.json").is_file():
        build_conan_layout_model(folder, **shape, n_cjk=n_cjk, weights="safetensors")
    print(f"model: Conan-embedding-v1 shape {shape}, built in {time.perf_counter() - start:.1f}s")
    try:
        run(args, device, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, device: torch.device, folder: Path) -> None:
    texts = scifact_texts(args.docs, args.queries)
    probe = load_encoder(str(folder), device=str(device), dtype="float32")
    lengths = [len(ids) for ids in probe.tokenize(texts)]
    flops = model_flops(probe.backend.transformer.config, lengths)
    probe.queue.stop()
    del probe
    clear_registry()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    print(
        f"device: {name}   bf16 dense peak: {f'{peak:.0f} TFLOPS' if peak else 'n/a'}   "
        f"texts: {len(texts)}   tokens: {sum(lengths)} (mean {np.mean(lengths):.0f}, "
        f"max {max(lengths)})   GFLOP: {flops / 1e9:.0f}"
    )
    loaded: list[object] = []

    # One system on the device at a time, so peak memory is its own weights + activations.
    def ours(dtype: str) -> Callable[[list[str]], np.ndarray]:
        encoder = load_encoder(str(folder), device=str(device), dtype=dtype)
        if args.forward not in (None, "auto"):
            encoder.backend.forward_mode = args.forward
        print(
            f"conan-rag: dtype={encoder.dtype} forward={encoder.backend.forward_mode} "
            f"token_budget={encoder.token_budget}"
        )
        loaded.append(encoder)
        return lambda batch: encoder.encode(batch)

    def sentence_transformers(dtype: torch.dtype | None) -> Callable[[list[str]], np.ndarray]:
        from sentence_transformers import SentenceTransformer

        kwargs = {"model_kwargs": {"dtype": dtype}} if dtype is not None else {}
        model = SentenceTransformer(str(folder), device=str(device), **kwargs)
        return lambda batch: model.encode(
            batch, batch_size=args.st_batch_size, normalize_embeddings=True
        )

    systems: dict[str, Callable[[], Callable[[list[str]], np.ndarray]]] = {}
    for dtype in args.dtype:
        resolved = resolve_dtype(dtype, resolve_device(str(device)))
        systems[f"conan-{resolved}"] = lambda dtype=dtype: ours(dtype)  # type: ignore[misc]
    if not args.skip_st:
        systems["st-fp32"] = lambda: sentence_transformers(None)
        if device.type == "cuda":
            systems["st-fp16"] = lambda: sentence_transformers(torch.float16)

    results: dict[str, tuple[np.ndarray, float, float]] = {}
    for label, load in systems.items():
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        embed = load()
        embed(texts[:64])  # warm up kernels and allocator
        results[label] = timed(lambda embed=embed: embed(texts), device)  # type: ignore[misc]
        print(f"  ran {label} in {results[label][1]:.1f}s", flush=True)
        del embed
        for encoder in loaded:  # free conan-rag's weights before the next system loads
            encoder.queue.stop()  # type: ignore[attr-defined]
        loaded.clear()
        clear_registry()

    reference = results.get("st-fp32", next(iter(results.values())))[0].astype(np.float32)
    print(
        f"\n{'system':<10} {'tokens/s':>10} {'vs st-fp32':>10} {'min cos':>9} "
        f"{'TFLOPS':>7} {'of peak':>8} {'peak GiB':>9}"
    )
    base = results["st-fp32"][1] if "st-fp32" in results else None
    for label, (vectors, seconds, memory) in results.items():
        vectors = vectors.astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cos = float((vectors * reference).sum(axis=1).min())
        tflops = flops / seconds / 1e12
        share = f"{tflops / peak:.1%}" if peak else "n/a"
        ratio = f"{base / seconds:.2f}x" if base else "-"
        print(
            f"{label:<10} {sum(lengths) / seconds:>10.0f} {ratio:>10} {cos:>9.6f} "
            f"{tflops:>7.1f} {share:>8} {memory:>9.2f}"
        )


if __name__ == "__main__":
    main()
