"""Device and dtype selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conan_rag.errors import ConanConfigError
from conan_rag.runtime.devices import cpu_has_native_bf16, resolve_device, resolve_dtype


def test_auto_device_without_gpu_is_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto") == expected


def test_cpu_auto_dtype_follows_native_bf16() -> None:
    flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert cpu_has_native_bf16() is native
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")


def test_dtype_aliases_and_errors() -> None:
    assert resolve_dtype("bf16", "cpu") == "bfloat16"
    assert resolve_dtype("fp16", "cpu") == "float16"
    with pytest.raises(ConanConfigError, match="'float32', 'bfloat16', 'float16'"):
        resolve_dtype("int8", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error message")
def test_cuda_without_gpu_says_so() -> None:
    with pytest.raises(ConanConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
