"""Encode throughput on CPU: conan_rag vs sentence-transformers, same texts, same threads.

Real texts (SciFact abstracts, ``title + " " + text``), one process, every variant loaded once
and then timed in alternating rounds (the order rotates each round), so load from other
processes hits all variants alike; the table shows the median of the rounds, the spread, the
process CPU seconds per round (a steadier measure on a shared machine), and
ratios against sentence-transformers' default (float32, what LangChain's
``HuggingFaceEmbeddings`` runs) and against sentence-transformers in bf16.

Variants:
    conan_auto  conan_rag with dtype="auto" (bf16 on CPUs with native bf16, else float32),
                compiled (compile="inductor": the AOTInductor package, built once per machine)
    conan_fp32  conan_rag in float32, compiled likewise (CPU fast path kept for eager fallback)
    conan_auto_eager, conan_fp32_eager  the same with compile="off" (today's eager forward)
    conan_plain conan_rag in float32 eager with cpu_kernels="off" (not in the default set)
    conan_onednn, conan_numpy  float32 eager with that CPU kernel forced (not in the default set)
    st_fp32     sentence-transformers default (float32)
    st_bf16     sentence-transformers with model_kwargs={"dtype": torch.bfloat16}

Warm-up: before timing, for each dtype a compiled variant uses, two fresh processes each load
the encoder with compile="auto"-as-"inductor" and embed one text, against a compiled cache
(``--cache-dir``, default a new empty folder): the first pays the compilation, the second
loads the cached package. Each reports seconds from its start (before importing torch) to its
first vector. The timed variants then use that cache. ``--smoke`` skips this and, unless
``--variants`` says otherwise, runs only eager variants.

Usage:
    python benchmarks/encode_throughput.py                  # 256 texts, 3 rounds, MiniLM
    python benchmarks/encode_throughput.py --n 512 --runs 5 --threads 2
    python benchmarks/encode_throughput.py --variants conan_fp32,conan_plain,st_fp32
    python benchmarks/encode_throughput.py --smoke          # 8 texts, 1 round (CI check)
    python benchmarks/encode_throughput.py --n 300 --runs 3 --threads 2   # the README table
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conan_rag import load_encoder  # noqa: E402
from conan_rag.model.files import BUNDLED_MINILM, resolve_model  # noqa: E402
from conan_rag.runtime.devices import cpu_has_native_bf16, resolve_dtype  # noqa: E402

CORPUS = ROOT / "data" / "scifact" / "corpus.jsonl.gz"
VARIANTS = (
    "conan_auto",
    "conan_fp32",
    "conan_auto_eager",
    "conan_fp32_eager",
    "conan_plain",
    "conan_onednn",
    "conan_numpy",
    "st_fp32",
    "st_bf16",
)
DEFAULT_VARIANTS = (
    "conan_auto",
    "conan_fp32",
    "conan_auto_eager",
    "conan_fp32_eager",
    "st_fp32",
    "st_bf16",
)
SMOKE_VARIANTS = ("conan_auto_eager", "conan_fp32_eager", "st_fp32", "st_bf16")
COMPILED = ("conan_auto", "conan_fp32")


def read_texts(n: int) -> list[str]:
    """The first ``n`` SciFact abstracts as ``title + " " + text``."""
    texts: list[str] = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            texts.append(f"{doc['title']} {doc['text']}".strip())
            if len(texts) >= n:
                break
    return texts


def conan_settings(variant: str) -> dict[str, str]:
    """dtype, cpu_kernels and compile of a conan_rag variant."""
    forced = {"conan_plain": "off", "conan_onednn": "onednn", "conan_numpy": "numpy"}
    return {
        "dtype": "auto" if variant.startswith("conan_auto") else "float32",
        "cpu_kernels": forced.get(variant, "auto"),
        "compile": "inductor" if variant in COMPILED else "off",
    }


def build(variant: str, model: str, batch_size: int) -> Callable[[list[str]], np.ndarray]:
    """Load one variant; returns ``encode(texts) -> L2-normalized float32 vectors``."""
    if variant.startswith("conan"):
        encoder = load_encoder(model, device="cpu", **conan_settings(variant))
        return lambda texts: encoder.encode(texts)
    from sentence_transformers import SentenceTransformer

    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if variant == "st_bf16" else {}
    st = SentenceTransformer(str(resolve_model(model)), device="cpu", **kwargs)

    def encode(texts: list[str]) -> np.ndarray:
        out = st.encode(texts, batch_size=batch_size, convert_to_numpy=True)
        out = np.asarray(out, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)

    return encode


def first_vector(model: str, dtype: str) -> int:
    """Warm-up child: load with compile="inductor", embed one text, print JSON timings."""
    imported = time.time()  # torch, transformers and conan_rag are imported by now
    encoder = load_encoder(model, device="cpu", dtype=dtype, compile="inductor")
    encoder.encode(["warm-up"])
    info = {"imported": imported, "first_vector": time.time()}
    info.update(cache=encoder.backend.compile_report.cache, forward=encoder.forward)
    print(json.dumps(info))
    return 0


def warm_up_report(model: str, dtypes: list[str], cache_dir: Path, threads: int | None) -> None:
    """Two fresh processes per dtype against ``cache_dir``: first (cold) and second (warm)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_dir)}
    print(f"warm-up (compiled cache under {cache_dir}), seconds from process launch:")
    for dtype in dtypes:
        for which in ("first process", "second process"):
            cmd = [sys.executable, __file__, "--model", model, "--first-vector", dtype]
            cmd += ["--threads", str(threads)] if threads else []
            launched = time.time()
            result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0:
                print(f"  {dtype:9s} {which}: failed: {result.stderr[-500:]}")
                continue
            info = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"  {dtype:9s} {which:14s}: first vector {info['first_vector'] - launched:6.1f}s "
                f"after launch ({info['first_vector'] - info['imported']:.1f}s after imports), "
                f"cache {info['cache']}: {info['forward']}"
            )


def print_results(
    args: argparse.Namespace,
    texts: list[str],
    tokens: int,
    variants: list[str],
    seconds: dict[str, list[float]],
    cpu: dict[str, list[float]],
    vectors: dict[str, np.ndarray],
) -> None:
    """The table of rates, ratios and cosines, then per-round ratios."""
    reference = vectors.get("st_fp32")
    if reference is None:
        st_ref = build("st_fp32", args.model, args.batch_size)
        reference = st_ref(texts)
    median = {v: statistics.median(ts) for v, ts in seconds.items()}
    header = f"{'variant':16s} {'texts/s':>8s} {'tokens/s':>9s} {'min..max texts/s':>17s} "
    header += f"{'vs st_fp32':>10s} {'vs st_bf16':>10s} {'min cos':>9s} {'cpu s':>7s}"
    print(header)
    for variant in variants:
        rate = len(texts) / median[variant]
        spread = (
            f"{len(texts) / max(seconds[variant]):.1f}..{len(texts) / min(seconds[variant]):.1f}"
        )
        cosine = float((vectors[variant] * reference).sum(axis=1).min())
        ratios = []
        for base in ("st_fp32", "st_bf16"):
            ratios.append(f"{median[base] / median[variant]:.2f}x" if base in median else "-")
        print(
            f"{variant:16s} {rate:8.1f} {tokens / median[variant]:9.0f} {spread:>17s} "
            f"{ratios[0]:>10s} {ratios[1]:>10s} {cosine:9.6f} "
            f"{statistics.median(cpu[variant]):7.1f}"
        )
    # Per-round ratios: variants ran back to back, so these cancel most outside load.
    for base in ("st_fp32", "st_bf16"):
        if base not in seconds:
            continue
        for variant in variants:
            if variant == base:
                continue
            per_round = [b / t for b, t in zip(seconds[base], seconds[variant], strict=True)]
            print(
                f"ratio {variant} vs {base}: median {statistics.median(per_round):.2f}x "
                f"(rounds {', '.join(f'{r:.2f}' for r in per_round)}); by CPU time "
                f"{statistics.median(cpu[base]) / statistics.median(cpu[variant]):.2f}x"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=BUNDLED_MINILM, help="model folder or hub id")
    parser.add_argument("--n", type=int, default=256, help="texts per round")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all variants)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers batch")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma list")
    parser.add_argument("--smoke", action="store_true", help="8 texts, 1 round: a quick check")
    parser.add_argument("--cache-dir", default=None, help="XDG cache for compiled packages")
    parser.add_argument("--first-vector", default=None, help=argparse.SUPPRESS)  # warm-up child
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.first_vector:
        return first_vector(args.model, args.first_vector)
    if args.smoke:
        args.n, args.runs = min(args.n, 8), 1
        if args.variants == parser.get_default("variants"):
            args.variants = ",".join(SMOKE_VARIANTS)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    texts = read_texts(args.n)
    print(f"model: {args.model}")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()} (all variants)")
    print(
        f"native bf16 on this CPU: {cpu_has_native_bf16()}; dtype auto -> "
        f"{resolve_dtype('auto', 'cpu')}"
    )
    blas = os.environ.get("OPENBLAS_CORETYPE")
    if blas:
        print(f"note: OPENBLAS_CORETYPE={blas} is set (it can slow numpy's BLAS)")

    compiled_dtypes = sorted(
        {resolve_dtype(conan_settings(v)["dtype"], "cpu") for v in variants if v in COMPILED}
    )
    if compiled_dtypes:
        cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="conan-compiled-"))
        os.environ["XDG_CACHE_HOME"] = str(cache_dir)  # the timed variants use this cache too
        if args.smoke:
            print("warm-up: skipped with --smoke")
        else:
            warm_up_report(args.model, compiled_dtypes, cache_dir, args.threads)

    encoders: dict[str, Callable[[list[str]], np.ndarray]] = {}
    for variant in variants:
        start = time.perf_counter()
        encoders[variant] = build(variant, args.model, args.batch_size)
        encoders[variant](texts[:8])  # warm-up: allocations, thread pools, first-call paths
        print(f"loaded {variant} in {time.perf_counter() - start:.1f}s")
    probe = load_encoder(args.model, device="cpu", dtype="float32", compile="off")
    tokens = sum(len(ids) for ids in probe.tokenize(texts))
    auto = load_encoder(args.model, device="cpu", dtype="auto", compile="off")
    print(f"conan_rag: auto dtype = {auto.dtype}; float32 cpu kernel = {probe.backend.cpu_kernel}")
    for variant in variants:
        if variant.startswith("conan"):
            enc = load_encoder(args.model, device="cpu", **conan_settings(variant))
            print(f"  {variant}: {enc.dtype}, forward {enc.forward}")
    print(
        f"{len(texts)} texts, {tokens} tokens ({tokens / len(texts):.0f} per text), "
        f"{args.runs} rounds\n"
    )

    seconds: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}  # process CPU time, all threads
    vectors: dict[str, np.ndarray] = {}
    for round_ in range(args.runs):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            vectors[variant] = encoders[variant](texts)
            seconds[variant].append(time.perf_counter() - start)
            cpu[variant].append(time.process_time() - cpu_start)

    print_results(args, texts, tokens, variants, seconds, cpu, vectors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
