"""The compiled CPU forward: parity with eager, the on-disk cache, corruption, config and repr.

One tiny random-weight model (Conan's layout) is compiled into a private ``XDG_CACHE_HOME``
once for the module; exactness checks pin float32, so they hold on CPUs with or without
native bf16.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conan_rag import load_encoder
from conan_rag.config import COMPILE_CHOICES, EncoderConfig
from conan_rag.errors import ConanConfigError
from conan_rag.model.spec import read_model_spec
from conan_rag.runtime.backend import Backend
from conan_rag.runtime.compile_cache import cache_root
from conan_rag.runtime.compiled import PACKAGE
from conan_rag.testing import build_conan_layout_model
from tests.pipeline_helpers import without_file_permissions_bypass

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "the cat is in the gene",
    "protein " * 70,  # 70+ tokens: padded up to the next 32-token bucket
    "dog",
    "细胞和基因。",
    "",
]


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compile_model")
    return build_conan_layout_model(folder, hidden_size=32, num_layers=1, num_heads=2, n_cjk=200)


@pytest.fixture(scope="module")
def compiled(tiny: Path, cache_home: Path) -> Backend:
    """Built once for the module (the cost every machine pays once)."""
    return Backend(read_model_spec(tiny), "cpu", "float32", compile="inductor")


def _embed(backend: Backend, texts: list[str]) -> np.ndarray:
    ids = backend.tokenize(texts, 512)
    vectors = torch.nn.functional.normalize(backend.embed(ids), dim=-1)
    return vectors.numpy()


def test_config_choice_round_trip_and_error_lists_choices() -> None:
    cfg = EncoderConfig(compile="inductor")
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert EncoderConfig().compile == "auto"
    with pytest.raises(ConanConfigError) as info:
        EncoderConfig(compile="tvm")
    assert info.value.choices == COMPILE_CHOICES
    for choice in COMPILE_CHOICES:
        assert repr(choice) in str(info.value)


def test_auto_without_an_entry_stays_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = build_conan_layout_model(tmp_path / "m", hidden_size=32, num_layers=1, n_cjk=200)
    backend = Backend(read_model_spec(folder), "cpu", "float32", compile="auto")
    assert backend.compiled is None
    assert "no compiled entry" in backend.compile_report.summary()
    assert not cache_root().exists() or not any(cache_root().iterdir())


@pytest.mark.slow
def test_compiled_float32_matches_eager(compiled: Backend, tiny: Path) -> None:
    report = compiled.compile_report
    assert report.mode == "inductor" and report.cache == "built"
    assert report.parity_min_cos is not None and report.parity_min_cos >= 0.99999
    eager = Backend(read_model_spec(tiny), "cpu", "float32", compile="off")
    assert eager.compiled is None
    cos = (_embed(compiled, TEXTS) * _embed(eager, TEXTS)).sum(axis=1)
    assert cos.min() >= 0.99999, cos


def test_second_process_loads_the_cache(compiled: Backend, tiny: Path, cache_home: Path) -> None:
    code = (
        "import json, time; start = time.perf_counter()\n"
        "from conan_rag import load_encoder\n"
        f"enc = load_encoder({str(tiny)!r}, device='cpu', dtype='float32', compile='inductor')\n"
        "enc.encode(['hello'])\n"
        "report = enc.backend.compile_report\n"
        "print(json.dumps({'cache': report.cache, 'mode': report.mode,"
        " 'seconds': time.perf_counter() - start}))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["cache"] == "hit" and info["mode"] == "inductor", info
    assert info["seconds"] < 30, info


def test_repr_and_info_show_the_decision(compiled: Backend, tiny: Path) -> None:
    enc = load_encoder(str(tiny), device="cpu", dtype="float32", compile="inductor")
    assert "forward='inductor (cache hit" in repr(enc)
    info = enc.info()
    assert info["compile"]["mode"] == "inductor" and info["compile"]["choice"] == "inductor"
    assert info["compile"]["parity_min_cos"] >= 0.99999
    auto = load_encoder(str(tiny), device="cpu", dtype="float32", compile="auto")
    # auto runs the entry only if it measured faster at build (tiny models often do not)
    speedup = auto.backend.compile_report.speedup or 0.0
    assert auto.forward.startswith("inductor" if speedup >= 1.03 else "eager ("), auto.forward
    off = load_encoder(str(tiny), device="cpu", dtype="float32", compile="off")
    assert "forward=\"eager (compile='off')\"" in repr(off)


@pytest.mark.slow
def test_corrupt_and_stale_entries_are_rebuilt(
    compiled: Backend, tiny: Path, cache_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = Path(str(compiled.compile_report.entry))
    with (entry / PACKAGE).open("ab") as fh:
        fh.write(b"corrupt")
    stale = entry.with_name(entry.name.rsplit("-", 1)[0] + "-0123456789abcdef")
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="conan_rag.runtime.compile_cache"):
        backend = Backend(read_model_spec(tiny), "cpu", "float32", compile="auto")
    assert "corrupt" in caplog.text and "stale" in caplog.text
    assert not stale.exists()
    report = backend.compile_report
    assert report.cache == "built" and report.entry == str(entry), report
    assert report.mode == "inductor" or "measured" in report.reason, report  # auto: if faster
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["parity_ok"] and manifest["parity_min_cos"] >= 0.99999
    rebuilt = Backend(read_model_spec(tiny), "cpu", "float32", compile="inductor")
    assert rebuilt.compile_report.cache == "hit"
    cos = (_embed(rebuilt, TEXTS) * _embed(compiled, TEXTS)).sum(axis=1)
    assert cos.min() >= 0.99999


@pytest.mark.slow
def test_bfloat16_compiled_is_correct(compiled: Backend, tiny: Path) -> None:
    """bf16 (native or emulated): the compiled path agrees with float32 to bf16 precision."""
    bf16 = Backend(read_model_spec(tiny), "cpu", "bfloat16", compile="inductor")
    assert bf16.compile_report.mode == "inductor", bf16.compile_report
    cos = (_embed(bf16, TEXTS) * _embed(compiled, TEXTS)).sum(axis=1)
    assert cos.min() >= 0.999, cos


def test_a_read_only_cache_runs_eager_with_one_warning(
    compiled: Backend, tiny: Path, tmp_path: Path
) -> None:
    """A corrupt entry in a cache that cannot be written: auto warns once and runs eager (the
    entry left as it was), inductor raises before compiling; run without root's bypass."""
    entry = Path(str(compiled.compile_report.entry))
    home = tmp_path / "xdg"
    copy = home / "conan_rag" / "compiled" / entry.name
    shutil.copytree(entry, copy)
    with (copy / PACKAGE).open("ab") as fh:
        fh.write(b"corrupt")
    before = sorted((p.name, p.stat().st_size) for p in copy.iterdir())
    code = (
        "import json, logging, sys\n"
        "from conan_rag.model.spec import read_model_spec\n"
        "from conan_rag.runtime.backend import Backend\n"
        "from conan_rag.runtime.compile_cache import CacheNotWritableError\n"
        "logging.basicConfig(level=logging.WARNING, format='WARN %(message)s')\n"
        "from pathlib import Path\n"
        "spec = read_model_spec(Path(sys.argv[1]))\n"
        "auto = Backend(spec, 'cpu', 'float32', compile='auto')\n"
        "out = {'auto': auto.compiled is None, 'reason': auto.compile_report.reason}\n"
        "try:\n"
        "    Backend(spec, 'cpu', 'float32', compile='inductor')\n"
        "except CacheNotWritableError as exc:\n"
        "    out['inductor'] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    folders = [home, home / "conan_rag", copy.parent, copy]
    for folder in folders:
        folder.chmod(0o555)
    try:
        result = subprocess.run(
            [*without_file_permissions_bypass(), sys.executable, "-c", code, str(tiny)],
            capture_output=True,
            text=True,
            env={**os.environ, "XDG_CACHE_HOME": str(home), "PYTHONPATH": str(ROOT)},
            timeout=300,
        )
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["auto"] is True and "not writable" in out["reason"], out
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARN ")]
    assert len(warnings) == 1 and "running eager" in warnings[0], result.stderr[-2000:]
    assert "corrupt" in warnings[0] and "XDG_CACHE_HOME" in warnings[0]
    assert "not writable" in out["inductor"] and str(copy.parent) in out["inductor"], out
    assert sorted((p.name, p.stat().st_size) for p in copy.iterdir()) == before  # untouched


def test_the_warm_up_command_finds_or_builds_the_entry(
    compiled: Backend, tiny: Path, cache_home: Path
) -> None:
    """``conan-rag warm-up`` for images and CI caches: one line naming the entry and the cache."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "conan_rag.cli", "warm-up", "--model", str(tiny)]
    result = subprocess.run(
        [*command, "--device", "cpu", "--dtype", "float32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # a hang guard only
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"conan-rag warm-up: {tiny} (float32, cpu): inductor (cache hit"), line
    assert f"; cache {cache_home / 'conan_rag' / 'compiled'};" in line
