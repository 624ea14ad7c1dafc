"""The benchmark scripts still run: all, with tiny sizes, in one subprocess on the cpu.

Numeric checks name their dtype: float32 must equal sentence-transformers fp32 (cos >= 0.99999),
bfloat16 — run explicitly whatever the CPU, emulated or native — must be close (>= 0.999).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmarks_run_with_smoke_sizes() -> None:
    # One interpreter for the scripts: importing torch and transformers again would double the
    # test's time.
    script = textwrap.dedent(
        """
        import runpy, sys
        runs = {
            "concurrency": ["--smoke", "--device", "cpu"],
            "gpu_throughput": ["--smoke", "--device", "cpu", "--dtype", "float32", "bfloat16"],
            "ingest_memory": ["--smoke"],
            "hybrid_retrieval": ["--smoke"],
        }
        for name, args in runs.items():
            sys.argv = [name, *args]
            runpy.run_path(f"benchmarks/{name}.py", run_name="__main__")
            print(f"=== {name} done", flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "=== concurrency done" in out and "=== gpu_throughput done" in out
    assert "=== ingest_memory done" in out and "peak RSS" in out
    assert "=== hybrid_retrieval done" in out and "hybrid/dense" in out
    zh = out.split("stsb-zh-retrieval:")[1].splitlines()
    ndcg = {line.split()[0]: float(line.split()[2]) for line in zh[1:4]}
    assert ndcg["lexical"] > ndcg["dense"] and ndcg["hybrid"] > ndcg["dense"]  # English model
    assert "queue/lock throughput:" in out and "one batch" in out
    assert "queue vs lock min cosine: 1.000000" in out
    assert "forward=varlen" in out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line[:3] in ("con", "st-")
    }
    assert float(rows["conan-float32"][1]) > 0  # tokens/s
    assert float(rows["conan-float32"][3]) >= 0.99999  # min cosine vs sentence-transformers fp32
    assert 0.999 <= float(rows["conan-bfloat16"][3]) < 1.0  # bf16 really ran: close, not equal
    assert float(rows["st-fp32"][3]) >= 0.99999


@pytest.mark.slow
def test_ray_ingest_benchmark_runs_with_smoke_sizes() -> None:
    """Single-process vs Ray (its own local runtime): same chunks, a figure for each."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/ray_ingest.py", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()
        for line in proc.stdout.splitlines()
        if line[:4] in ("sing", "ray1")
    }
    assert float(rows["single"][2]) > 0 and float(rows["ray1"][2]) > 0  # chunks/s
    assert rows["single"][3] == "1.00x" and float(rows["ray1"][3].rstrip("x")) > 0
    assert "Ray local runtime start + stop alone:" in proc.stdout
