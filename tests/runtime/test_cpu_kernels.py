"""The CPU fast path (runtime.cpu_kernels): every kernel matches plain torch; tune; disable."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conan_rag import load_encoder
from conan_rag.config import EncoderConfig
from conan_rag.errors import ConanConfigError
from conan_rag.model.spec import read_model_spec
from conan_rag.runtime import cpu_kernels
from conan_rag.runtime.backend import Backend

TEXTS = [
    "Paris is the capital of France.",
    "Microstructural development of human newborn cerebral white matter.",
    "猫坐在垫子上。",
    "",
    "protein " * 60,
]
KERNELS = cpu_kernels.available_kernels()


def _embed(folder: Path, kernel: str) -> np.ndarray:
    encoder = load_encoder(
        str(folder), device="cpu", dtype="float32", cpu_kernels=kernel, use_queue=False
    )
    assert encoder.backend.cpu_kernel == ("torch" if kernel == "off" else kernel)
    return encoder.encode(TEXTS)


@pytest.fixture(scope="module")
def models(minilm_path: Path, conan_tiny: Path) -> dict[str, Path]:
    return {"minilm": minilm_path, "conan": conan_tiny}


@pytest.mark.parametrize("name", ["minilm", "conan"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_matches_plain_torch(models: dict[str, Path], name: str, kernel: str) -> None:
    plain = _embed(models[name], "off")
    fast = _embed(models[name], kernel)
    cosine = (plain * fast).sum(axis=1)  # both L2-normalized
    assert cosine.min() >= 0.99999, (name, kernel, cosine)


def test_kernels_patch_every_linear_and_fuse_bert_gelu(minilm_path: Path) -> None:
    spec = read_model_spec(minilm_path)
    backend = Backend(spec, "cpu", "float32", cpu_kernels="onednn")
    layers = backend.transformer.config.num_hidden_layers
    assert backend.cpu_kernel == "onednn"
    assert cpu_kernels.current_kernel(backend.transformer) == "onednn"
    report = cpu_kernels.apply_cpu_fast_path(backend.transformer, "numpy")
    assert (report.linears, report.fused_gelu) == (6 * layers, layers)  # q, k, v, o, inter, out
    assert cpu_kernels.remove_cpu_fast_path(backend.transformer) == 6 * layers
    assert cpu_kernels.current_kernel(backend.transformer) == "torch"


def test_autotune_returns_a_valid_choice(conan_tiny: Path) -> None:
    spec = read_model_spec(conan_tiny)
    backend = Backend(spec, "cpu", "float32", cpu_kernels="auto")
    assert backend.cpu_kernel in KERNELS
    kernel, timings = cpu_kernels.autotune(backend.transformer, rounds=2, tokens=64)
    assert kernel in KERNELS
    assert set(timings) == set(KERNELS)
    assert all(t > 0 for t in timings.values())
    assert cpu_kernels.autotune(torch.nn.ReLU()) == ("torch", {})


def test_disabling_leaves_torch_alone(conan_tiny: Path) -> None:
    spec = read_model_spec(conan_tiny)
    backend = Backend(spec, "cpu", "float32", cpu_kernels="off")
    assert backend.cpu_kernel == "torch"
    assert cpu_kernels.current_kernel(backend.transformer) == "torch"
    assert all("forward" not in vars(m) for m in backend.transformer.modules())


def test_non_float32_models_are_not_patched(conan_tiny: Path) -> None:
    spec = read_model_spec(conan_tiny)
    backend = Backend(spec, "cpu", "bfloat16", cpu_kernels="numpy")
    assert backend.cpu_kernel == "torch"
    assert cpu_kernels.current_kernel(backend.transformer) == "torch"


def test_bad_choices_are_rejected() -> None:
    with pytest.raises(ConanConfigError, match="cpu_kernels"):
        EncoderConfig(cpu_kernels="mkl")
    with pytest.raises(ValueError, match="Unknown cpu kernel"):
        cpu_kernels.apply_cpu_fast_path(torch.nn.Linear(2, 2), "mkl")


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "torch"])
def test_concurrent_forwards_are_independent(kernel: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    inputs = [torch.randn(n, 7, 32) for n in range(1, 9)]
    with torch.inference_mode():
        expected = [model(x) for x in inputs]
        cpu_kernels.apply_cpu_fast_path(model, kernel)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(model, inputs * 4))
    for index, out in enumerate(got):
        torch.testing.assert_close(out, expected[index % len(inputs)], rtol=1e-5, atol=1e-5)
