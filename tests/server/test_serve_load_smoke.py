"""benchmarks/serve_load.py still runs: a tiny Conan-layout model, 4 clients, one run, cpu."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_serve_load_benchmark_runs_with_smoke_sizes() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/serve_load.py", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "conan-rag serve: " in out and " on http://127.0.0.1:" in out
    assert "server vs in-process min cosine: 1.000000" in out
    rates = {
        line.split("  ")[0].strip(): float(line.split("req/s")[0].split()[-1])
        for line in out.splitlines()
        if "req/s" in line
    }
    assert len(rates) == 5 and all(rate > 0 for rate in rates.values()), rates
    assert "concurrent/sequential throughput: " in out
    assert "HTTP overhead, batches of 32: base64 " in out
