"""benchmarks/encode_throughput.py --smoke runs end to end and prints its table and ratios.

A fixed-count benchmark is not a unit test: nothing here asserts on speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "encode_throughput.py"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_smoke_prints_ratio_lines(conan_tiny: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--model", str(conan_tiny), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "threads: 1 (all variants)" in out
    assert "dtype auto ->" in out
    for variant in ("conan_auto_eager", "conan_fp32_eager", "st_fp32", "st_bf16"):
        assert any(line.startswith(variant) for line in out.splitlines()), out
    assert "ratio conan_fp32_eager vs st_fp32: median" in out
    assert "ratio conan_auto_eager vs st_bf16: median" in out
    assert "warm-up: skipped with --smoke" not in out  # smoke runs no compiled variant
    assert "min cos" in out
