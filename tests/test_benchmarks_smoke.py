"""The benchmark scripts still run: both, with tiny sizes, in one subprocess on the cpu."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmarks_run_with_smoke_sizes() -> None:
    # One interpreter for both scripts: importing torch and transformers twice would double
    # the test's time.
    script = textwrap.dedent(
        """
        import runpy, sys
        for name in ("concurrency", "gpu_throughput"):
            sys.argv = [name, "--smoke", "--device", "cpu"]
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
    assert "queue/lock throughput:" in out and "one batch" in out
    assert "queue vs lock min cosine: 1.000000" in out
    assert "forward=varlen" in out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line[:3] in ("con", "st-")
    }
    assert float(rows["conan-rag"][1]) > 0  # tokens/s
    assert float(rows["conan-rag"][3]) >= 0.99999  # min cosine vs sentence-transformers fp32
    assert float(rows["st-fp32"][3]) >= 0.99999
