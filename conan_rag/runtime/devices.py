"""Choose a device and a dtype: the fastest one the hardware computes natively.

Example:
    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_dtype("float32", "cpu")
    'float32'
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from conan_rag.errors import ConanConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX).

    Without them, bf16 on a CPU is emulated and slower than float32.
    """
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_device(device: str) -> str:
    """Turn ``"auto"`` into cuda, then mps, then cpu; check an explicit choice exists.

    Raises:
        ConanConfigError: the device is not one of auto, cpu, cuda[:N], mps, or is absent.
    """
    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    kind = name.split(":", 1)[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ConanConfigError(
            f"Unknown device {device!r}; choose one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'.",
            setting="device",
            value=device,
            choices=("auto", "cpu", "cuda", "cuda:N", "mps"),
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConanConfigError(
            f"Device {device!r} was asked for but torch sees no CUDA GPU; use device='auto' "
            "or 'cpu'.",
            setting="device",
            value=device,
            choices=available_devices(),
        )
    if kind == "cuda" and ":" in name:
        index = name.split(":", 1)[1]
        count = torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise ConanConfigError(
                f"Device {device!r} does not exist: torch sees {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}.",
                setting="device",
                value=device,
                choices=available_devices(),
            )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if ":" in name or mps is None or not mps.is_available():
            raise ConanConfigError(
                f"Device {device!r} was asked for but torch has no MPS (Apple GPU) device here; "
                "use device='auto' or 'cpu'.",
                setting="device",
                value=device,
                choices=available_devices(),
            )
    return name


def available_devices() -> tuple[str, ...]:
    """The devices this machine can run on, ``"auto"`` first.

    Example:
        >>> available_devices()[:2]
        ('auto', 'cpu')
    """
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return tuple(found)


def resolve_dtype(dtype: str, device: str) -> str:
    """Turn ``"auto"`` into bf16 (CUDA with bf16, or a CPU with native bf16), fp16, or fp32.

    Raises:
        ConanConfigError: the dtype is not one of auto, float32, bfloat16, float16.
    """
    name = _DTYPE_ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if name == "auto":
        kind = device.split(":", 1)[0]
        if kind == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if kind == "mps":
            return "float16"
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    if name not in DTYPES:
        raise ConanConfigError(
            f"Unknown dtype {dtype!r}; choose one of 'auto', {', '.join(map(repr, DTYPES))}."
        )
    return name
