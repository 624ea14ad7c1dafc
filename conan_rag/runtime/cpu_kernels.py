"""CPU fast path: run a transformer's ``nn.Linear`` layers on the fastest float32 GEMM here.

On CPUs, about two thirds of a BERT forward is the dense layers (``aten::addmm``). PyTorch
runs them on MKL, which is fast on Intel but often not on AMD; the same process also holds
oneDNN (torch's ``mkldnn`` ops, with weights pre-packed into its blocked layout and GELU fused
into the intermediate GEMM) and OpenBLAS (numpy's BLAS, called on zero-copy views of torch's
tensors). :func:`apply_cpu_fast_path` times each kernel on the model's own layer shapes once
(:func:`autotune`, about a second) and swaps the layers' ``forward`` for the fastest one.

Every kernel computes the same float32 product (only the summation order differs, so vectors
agree to cosine > 0.99999); weights stay the module's own tensors (oneDNN keeps one packed
copy of each matrix); no buffer is shared between calls, so concurrent forwards are safe.

Example:
    >>> import torch
    >>> layer = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU())
    >>> report = apply_cpu_fast_path(layer, "numpy")
    >>> report.kernel, report.linears
    ('numpy', 1)
    >>> layer(torch.ones(2, 8)).shape
    torch.Size([2, 16])
    >>> remove_cpu_fast_path(layer)
    1
"""

from __future__ import annotations

import functools
import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conan_rag.config import CPU_KERNEL_CHOICES, CPU_KERNELS
from conan_rag.errors import ConanConfigError

logger = logging.getLogger(__name__)

Kernel = Literal["torch", "onednn", "numpy"]
KERNELS: tuple[str, ...] = CPU_KERNELS
CHOICES: tuple[str, ...] = CPU_KERNEL_CHOICES
# A kernel must beat plain torch by this much in the autotune to be chosen (timing noise).
MIN_GAIN = 0.03

_PATCHED = "_conan_fast_kernel"  # attribute set on every module whose forward we replaced
_tune_lock = threading.Lock()
_tune_cache: dict[tuple[object, ...], tuple[str, dict[str, float]]] = {}


@dataclass
class FastPathReport:
    """What :func:`apply_cpu_fast_path` did.

    Attributes:
        kernel: the kernel now running the linear layers (``"torch"`` means unchanged).
        linears: linear layers whose forward was replaced.
        fused_gelu: GELU activations fused into the GEMM before them.
        timings: seconds per kernel for one layer's GEMMs in the autotune (empty if not tuned).
    """

    kernel: str
    linears: int = 0
    fused_gelu: int = 0
    timings: dict[str, float] = field(default_factory=dict)


# -- kernels -----------------------------------------------------------------------------------
def _is_exact_gelu(module: object) -> bool:
    """True for activations computing ``F.gelu(x)`` (erf form): nn.GELU or HF's GELUActivation."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is F.gelu


@functools.cache
def _blas_threads() -> int | None:
    """Threads numpy's BLAS runs with (None when unknown); read once per process."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn/scipy stacks
        return None
    for pool in threadpool_info():
        if pool.get("internal_api") in ("openblas", "mkl", "blis") and "numpy" in str(
            pool.get("filepath", "")
        ):
            return int(pool["num_threads"])
    return None


def _torch_kernel(linear: nn.Linear, gelu: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    weight, bias = linear.weight, linear.bias

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out

    return forward


def _onednn_kernel(linear: nn.Linear, gelu: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    weight, bias = linear.weight, linear.bias
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    op = torch.ops.mkldnn._linear_pointwise

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.requires_grad or x.device.type != "cpu":
            out = F.linear(x, weight, bias)
            return F.gelu(out) if gelu else out
        return op(x, packed, bias, attr, [], algorithm)

    return forward


def _numpy_kernel(linear: nn.Linear, gelu: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    weight, bias = linear.weight, linear.bias
    weight_t = weight.detach().numpy().T  # a view: BLAS reads it transposed, nothing copied
    blas_threads = _blas_threads()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if (
            x.dtype != torch.float32
            or x.requires_grad
            or x.device.type != "cpu"
            or (blas_threads is not None and blas_threads != torch.get_num_threads())
        ):
            out = F.linear(x, weight, bias)
            return F.gelu(out) if gelu else out
        flat = x.reshape(-1, x.shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        out = torch.from_numpy(np.matmul(flat.numpy(), weight_t))
        if bias is not None:
            out.add_(bias)  # torch's add is multi-threaded; numpy's += is not
        if gelu:
            torch.ops.aten.gelu_(out)
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


_FACTORIES: dict[str, Callable[[nn.Linear, bool], Callable[[torch.Tensor], torch.Tensor]]] = {
    "torch": _torch_kernel,
    "onednn": _onednn_kernel,
    "numpy": _numpy_kernel,
}


@functools.cache
def available_kernels() -> tuple[str, ...]:
    """Kernels that run in this process (oneDNN needs torch built with mkldnn)."""
    found = ["torch"]
    try:
        x, w = torch.ones(2, 4), torch.ones(3, 4)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        if torch.allclose(out, F.linear(x, w)):
            found.append("onednn")
    except (AttributeError, RuntimeError):
        pass
    found.append("numpy")
    return tuple(found)


# -- patching ----------------------------------------------------------------------------------
def _targets(model: nn.Module) -> list[tuple[nn.Module, nn.Linear, bool]]:
    """(module to patch, its linear, fuse GELU) for every float32 CPU linear in ``model``.

    A module with exactly a ``dense`` linear and an exact-GELU ``intermediate_act_fn`` (BERT's
    intermediate block) is patched as one fused GEMM + GELU; other linears are patched alone.
    """
    targets: list[tuple[nn.Module, nn.Linear, bool]] = []
    fused: set[int] = set()
    for module in model.modules():
        dense = getattr(module, "dense", None)
        act = getattr(module, "intermediate_act_fn", None)
        children = set(dict(module.named_children()))
        if (
            isinstance(dense, nn.Linear)
            and _is_exact_gelu(act)
            and children <= {"dense", "intermediate_act_fn"}
        ):
            targets.append((module, dense, True))
            fused.add(id(dense))
    for module in model.modules():
        if type(module) is nn.Linear and id(module) not in fused:
            targets.append((module, module, False))
    return [
        t
        for t in targets
        if t[1].weight.dtype == torch.float32 and t[1].weight.device.type == "cpu"
    ]


def remove_cpu_fast_path(model: nn.Module) -> int:
    """Restore every patched module's own forward; returns how many were restored.

    Example:
        >>> remove_cpu_fast_path(torch.nn.Linear(2, 2))
        0
    """
    restored = 0
    for module in model.modules():
        if getattr(module, _PATCHED, None) is not None:
            del module.forward
            delattr(module, _PATCHED)
            restored += 1
    return restored


def _patch(model: nn.Module, kernel: str) -> FastPathReport:
    remove_cpu_fast_path(model)
    report = FastPathReport(kernel=kernel)
    if kernel == "torch":
        return report
    factory = _FACTORIES[kernel]
    for module, linear, gelu in _targets(model):
        module.forward = factory(linear, gelu)  # type: ignore[method-assign]
        setattr(module, _PATCHED, kernel)
        report.linears += 1
        report.fused_gelu += int(gelu)
    return report


def current_kernel(model: nn.Module) -> str:
    """The kernel running ``model``'s linear layers (``"torch"`` when none is patched).

    Example:
        >>> current_kernel(torch.nn.Linear(2, 2))
        'torch'
    """
    for module in model.modules():
        kernel = getattr(module, _PATCHED, None)
        if kernel is not None:
            return str(kernel)
    return "torch"


# -- autotune ----------------------------------------------------------------------------------
def _shapes(model: nn.Module) -> list[tuple[int, int, bool]]:
    """Distinct (in, out, fused GELU) GEMM shapes of ``model`` with their multiplicity."""
    return [(lin.in_features, lin.out_features, gelu) for _, lin, gelu in _targets(model)]


def autotune(
    model: nn.Module,
    kernels: tuple[str, ...] | None = None,
    *,
    tokens: int | None = None,
    rounds: int = 5,
) -> tuple[str, dict[str, float]]:
    """Time each kernel on one layer's GEMMs of ``model``; return the fastest and the timings.

    Kernels run in alternating rounds and each is scored by its median, so load from other
    processes hits all alike. A kernel other than ``"torch"`` must win by :data:`MIN_GAIN`.
    Results are cached per (shapes, threads, tokens).

    Args:
        model: the (float32, CPU) model whose linear shapes to time.
        kernels: candidates (default :func:`available_kernels`).
        tokens: rows of the timed GEMMs (default: ~0.3 GFLOP per layer, 256 to 4096 rows).
        rounds: alternating rounds.

    Returns:
        ``(kernel, {kernel: median seconds per layer})``.

    Example:
        >>> kernel, timings = autotune(torch.nn.Linear(64, 64), rounds=1)
        >>> kernel in KERNELS
        True
    """
    kernels = tuple(kernels or available_kernels())
    shapes = _shapes(model)
    if not shapes:
        return "torch", {}
    # One "layer": the most common shapes, each with its multiplicity per layer.
    counts: dict[tuple[int, int, bool], int] = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    fewest = min(counts.values())
    layer = {shape: max(1, round(n / fewest)) for shape, n in counts.items()}
    flops = sum(2 * k * n * c for (k, n, _), c in layer.items())
    rows = tokens or int(min(4096, max(256, 3e8 / flops)))
    key = (tuple(sorted(layer.items())), kernels, rows, torch.get_num_threads())
    with _tune_lock:
        if key in _tune_cache:
            return _tune_cache[key]
    generator = torch.Generator().manual_seed(0)
    cases = []
    for (k, n, gelu), count in layer.items():
        linear = nn.Linear(k, n)
        with torch.no_grad():
            linear.weight.normal_(0, k**-0.5, generator=generator)
        x = torch.randn(rows, k, generator=generator)
        cases.append((x, {name: _FACTORIES[name](linear, gelu) for name in kernels}, count))
    times: dict[str, list[float]] = {name: [] for name in kernels}
    with torch.inference_mode():
        for x, fns, _ in cases:  # warm-up: first calls pack, allocate, spin up threads
            for fn in fns.values():
                fn(x)
        for _ in range(max(1, rounds)):
            for name in kernels:
                start = time.perf_counter()
                for x, fns, count in cases:
                    for _ in range(count):
                        fns[name](x)
                times[name].append(time.perf_counter() - start)
    timings = {name: statistics.median(ts) for name, ts in times.items()}
    best = min(timings, key=timings.__getitem__)
    if "torch" in timings and timings[best] > timings["torch"] * (1 - MIN_GAIN):
        best = "torch"
    with _tune_lock:
        _tune_cache[key] = (best, timings)
    return best, timings


def apply_cpu_fast_path(model: nn.Module, kernel: str = "auto") -> FastPathReport:
    """Run ``model``'s float32 CPU linear layers on ``kernel`` (``"auto"``: the fastest here).

    Args:
        model: a loaded transformer (or any module) in eval mode.
        kernel: ``"auto"`` (autotune), ``"off"``/``"torch"`` (leave torch's own), ``"onednn"``,
            or ``"numpy"``.

    Returns:
        A :class:`FastPathReport`.

    Raises:
        ValueError: ``kernel`` is not one of :data:`CHOICES`.

    Example:
        >>> report = apply_cpu_fast_path(torch.nn.Linear(4, 4), "off")
        >>> report.kernel
        'torch'
    """
    if kernel not in CHOICES:
        raise ConanConfigError(f"Unknown cpu kernel {kernel!r}; choose one of {list(CHOICES)}.")
    if kernel == "off":
        remove_cpu_fast_path(model)
        return FastPathReport(kernel="torch")
    timings: dict[str, float] = {}
    if kernel == "auto":
        if not _targets(model):
            return FastPathReport(kernel="torch")
        kernel, timings = autotune(model)
        logger.info("CPU linear kernel: %s (autotune %s)", kernel, timings)
    elif kernel not in available_kernels():
        raise ConanConfigError(f"cpu kernel {kernel!r} is not available in this torch build.")
    report = _patch(model, kernel)
    report.timings = timings
    return report
