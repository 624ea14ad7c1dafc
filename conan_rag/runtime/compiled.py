"""Compiled CPU forward: the transformer exported once, compiled by AOTInductor, cached on disk.

The transformer (``input_ids, attention_mask -> last_hidden_state``) is exported with
``torch.export`` with a dynamic batch size and a sequence length that is a multiple of
:data:`BUCKET` (batches are right-padded up to the next multiple, the mask hides the padding),
then compiled by AOTInductor with freezing (weights folded in as constants, GEMMs on
pre-packed weights, element-wise work fused). The resulting ``.pt2`` package is
self-contained: a later process loads it in about a second, with no recompilation. Packages
live in :mod:`conan_rag.runtime.compile_cache`, keyed by the model fingerprint, dtype, torch
version, CPU flags and bucket set.

Each entry is built once, and then checked once: the parity gate runs the compiled and the
eager forward on a fixed probe batch (one width a multiple of the bucket, one padded up to it)
and records the least cosine of the pooled vectors; an entry below :data:`PARITY` is never
used. The build also times both forwards in alternating rounds and records the speedup, which
``compile="auto"`` requires to be at least ``1 + MIN_GAIN``.

Example:
    >>> bucket_width(45), bucket_width(64), bucket_width(600, limit=512)
    (64, 64, None)
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from conan_rag.runtime import compile_cache as cache

logger = logging.getLogger(__name__)

BUCKET = 32  # compiled sequence lengths: multiples of this, up to the model's position limit
MAX_BATCH = 4096
PACKAGE = "model.pt2"
MIN_GAIN = 0.03  # compile="auto" uses an entry only if it measured at least this much faster
# Least cosine (pooled probe vectors) between compiled and eager for an entry to be used.
PARITY: dict[str, float] = {"float32": 0.99999, "bfloat16": 0.999, "float16": 0.999}
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert"})
_build_lock = threading.Lock()
PlainLinears = Callable[[], AbstractContextManager[Any]]


def bucket_width(length: int, limit: int = 512) -> int | None:
    """The compiled width for a batch whose longest text has ``length`` tokens (None: too long).

    Example:
        >>> bucket_width(1)
        32
    """
    width = max(BUCKET, -(-length // BUCKET) * BUCKET)
    return width if width <= limit else None


def position_limit(transformer: nn.Module) -> int:
    """Longest sequence the model's position embeddings allow, rounded down to a bucket."""
    config = getattr(transformer, "config", None)
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        limit -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return limit // BUCKET * BUCKET


@dataclass
class CompileReport:
    """What the compile step decided for one backend, and why.

    Attributes:
        choice: the configured choice (``"auto"``, ``"off"``, ``"inductor"``).
        mode: what runs: ``"inductor"`` (the compiled package) or ``"eager"``.
        reason: one line saying why.
        cache: ``"hit"``, ``"built"`` or ``"none"``.
        entry: the cache entry's folder, if any.
        seconds: time spent loading (or building and loading) the package.
        parity_min_cos: the parity gate's least cosine, if an entry was checked.
        speedup: eager time / compiled time measured when the entry was built.
    """

    choice: str
    mode: str = "eager"
    reason: str = ""
    cache: str = "none"
    entry: str | None = None
    seconds: float = 0.0
    parity_min_cos: float | None = None
    speedup: float | None = None

    def summary(self) -> str:
        """One line for logs and ``repr``.

        Example:
            >>> CompileReport("off", reason="compile='off'").summary()
            "eager (compile='off')"
        """
        if self.mode == "eager":
            return f"eager ({self.reason})"
        gain = f", {self.speedup:.2f}x eager" if self.speedup else ""
        return f"inductor (cache {self.cache}, {self.seconds:.1f}s{gain})"


class _Forward(nn.Module):
    """``(input_ids, attention_mask) -> last_hidden_state``: the part that is exported."""

    def __init__(self, transformer: nn.Module, token_types: bool) -> None:
        super().__init__()
        self.transformer = transformer
        self.token_types = token_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token vectors of a right-padded batch."""
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return out.last_hidden_state  # type: ignore[no-any-return]


def _probe(vocab: int, lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    low = min(1000, vocab // 2)
    ids = torch.randint(low, vocab, (len(lengths), width), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return ids * mask, mask


def _pooled(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[:, : tokens.shape[1], None].float()
    return (tokens.float() * weights).sum(1) / weights.sum(1)


def parity_min_cos(
    eager: Callable[..., torch.Tensor], compiled: Callable[..., torch.Tensor], vocab: int
) -> float:
    """Least cosine between compiled and eager pooled vectors on the fixed probe batches."""
    worst = 1.0
    for lengths in ([64, 40, 17, 5], [45, 30, 7]):
        ids, mask = _probe(vocab, lengths, max(lengths))
        reference = _pooled(eager(ids, mask), mask)
        width = bucket_width(max(lengths)) or max(lengths)
        padded_ids = torch.nn.functional.pad(ids, (0, width - ids.shape[1]))
        padded_mask = torch.nn.functional.pad(mask, (0, width - mask.shape[1]))
        got = _pooled(compiled(padded_ids, padded_mask), padded_mask)
        cos = torch.nn.functional.cosine_similarity(got, reference, dim=-1)
        worst = min(worst, float(cos.min()))
    return worst


def measure_speedup(
    eager: Callable[..., torch.Tensor],
    compiled: Callable[..., torch.Tensor],
    vocab: int,
    width: int,
    rounds: int = 3,
) -> float:
    """Median per-round ratio eager/compiled on an 8-text batch, variants alternating."""
    ids, mask = _probe(vocab, [width] * 8, width)
    ratios = []
    for fn in (eager, compiled):
        fn(ids, mask)  # warm-up
    for _ in range(rounds):
        start = time.perf_counter()
        eager(ids, mask)
        middle = time.perf_counter()
        compiled(ids, mask)
        ratios.append((middle - start) / max(1e-9, time.perf_counter() - middle))
    return statistics.median(ratios)


def _build(
    forward: _Forward, limit: int, dtype: str, folder: Path, plain: PlainLinears
) -> dict[str, Any]:
    """Export (inside ``plain()``) + AOTInductor-compile ``forward``; gate and time it."""
    from torch.export import Dim

    start = time.perf_counter()
    vocab = int(getattr(forward.transformer.config, "vocab_size", 1000))
    ids, mask = _probe(vocab, [64, 40, 17, 5], 64)
    batch = Dim("batch", min=1, max=MAX_BATCH)
    seq = BUCKET * Dim("seq_buckets", min=1, max=limit // BUCKET)
    shapes = ({0: batch, 1: seq}, {0: batch, 1: seq})
    with torch.no_grad():
        with plain():
            program = torch.export.export(forward, (ids, mask), dynamic_shapes=shapes)
        path = folder / PACKAGE
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs={"freezing": True}
        )
    runner = torch._inductor.aoti_load_package(str(path))
    with torch.inference_mode():
        cos = parity_min_cos(forward, runner, vocab)
        speedup = measure_speedup(forward, runner, vocab, min(256, limit))
    return {
        "parity_min_cos": cos,
        "parity_ok": cos >= PARITY.get(dtype, 0.999),
        "speedup": round(speedup, 3),
        "build_s": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }


def entry_key(model_fingerprint: str, dtype: str, limit: int) -> tuple[str, dict[str, Any]]:
    """The cache entry's name and key for a model, dtype and compiled limit on this machine.

    Example:
        >>> name, key = entry_key("abc", "bfloat16", 512)
        >>> name.startswith("abc-bfloat16-") and key["dtype"] == "bfloat16"
        True
    """
    key = {
        "model": model_fingerprint,
        "dtype": dtype,
        "torch": torch.__version__,
        "cpu": cache.cpu_signature(),
        "buckets": f"{BUCKET}*k<= {limit}, batch<= {MAX_BATCH}",
    }
    return f"{model_fingerprint}-{dtype}-{cache.short_hash(key)}", key


def _remove_stale(root: Path, stale: list[Path]) -> None:
    for folder in stale:
        cache.remove_entry(folder, "stale (built for another torch or CPU)")


def _ensure_entry(
    root: Path, name: str, key: dict[str, Any], stale: list[Path], build: Callable[[Path], Any]
) -> tuple[dict[str, Any] | None, bool]:
    """Build the entry (checking the cache is writable first); ``(manifest, built here)``.

    Raises:
        CacheNotWritableError: the cache folder cannot be written (nothing was compiled).
    """
    cache.require_writable(root)
    _remove_stale(root, stale)
    model, dtype = key["model"], key["dtype"]
    logger.warning(
        "Compiling model %s (%s) for this CPU into %s, once per machine...",
        model,
        dtype,
        root / name,
    )
    built: list[bool] = []

    def run(folder: Path) -> Any:
        built.append(True)
        return build(folder)

    cache.write_entry(root, name, key, run)
    return cache.check_entry(root, name, key)[0], bool(built)


def _not_writable(
    report: CompileReport, exc: cache.CacheNotWritableError, entry: Path, problem: str | None
) -> None:
    """compile='auto' on a cache it cannot repair: one warning, and the report says eager."""
    what = f"is {problem}" if problem else "is missing (only entries for another torch or CPU)"
    logger.warning("Compiled cache entry %s %s; running eager. %s", entry, what, exc)
    report.reason = f"compiled cache not writable: {exc.folder}"


def setup_compiled(
    transformer: nn.Module,
    *,
    token_types: bool,
    dtype: str,
    model_fingerprint: str,
    choice: str,
    plain: PlainLinears = contextlib.nullcontext,
) -> tuple[Callable[..., torch.Tensor] | None, int, CompileReport]:
    """Load (or build) the compiled forward of a CPU transformer as ``choice`` says.

    ``"off"``: eager. ``"auto"``: the cached package when this machine has an entry for the
    model (built by ``compile="inductor"`` or :meth:`~conan_rag.encoder.Encoder.warm_up`) that
    passed the parity gate and measured faster; a corrupt or stale entry is rebuilt (when the
    cache cannot be written: one warning, eager); no entry: eager. ``"inductor"``: build the
    entry if missing (tens of seconds, once per machine), then use it if it passed the parity
    gate.

    Args:
        transformer: the loaded transformer (eval mode, on the CPU).
        token_types: pass all-zero ``token_type_ids`` (BERT-style models).
        dtype: its dtype name (``"float32"``, ``"bfloat16"``, ...).
        model_fingerprint: the model files' fingerprint (part of the cache key).
        choice: ``"auto"``, ``"off"`` or ``"inductor"``.
        plain: a context in which the transformer runs torch's own layers, for export (the
            parity gate and timing compare with the transformer as it runs outside it).

    Returns:
        ``(forward or None, longest compiled width, report)``.

    Raises:
        CacheNotWritableError: ``"inductor"`` needs to build an entry and the cache folder
            cannot be written (raised before compiling).
    """
    report = CompileReport(choice)
    if choice == "off":
        report.reason = "compile='off'"
        return None, 0, report
    limit = position_limit(transformer)
    if limit < BUCKET:
        report.reason = "position limit below one bucket"
        return None, 0, report
    name, key = entry_key(model_fingerprint, dtype, limit)
    root = cache.cache_root()
    start = time.perf_counter()
    with _build_lock:
        manifest, problem = cache.check_entry(root, name, key)
        stale = cache.stale_entries(root, f"{model_fingerprint}-{dtype}-", keep=name)
        if manifest is None and choice == "auto" and not (problem or stale):
            report.reason = "no compiled entry yet: Encoder.warm_up() builds one"
            return None, 0, report
        if manifest is not None:
            report.cache = "hit"
            if stale and cache.write_problem(root) is None:
                _remove_stale(root, stale)
        else:
            forward = _Forward(transformer, token_types).eval()
            try:
                manifest, built = _ensure_entry(
                    root, name, key, stale, lambda d: _build(forward, limit, dtype, d, plain)
                )
            except cache.CacheNotWritableError as exc:
                if choice != "auto":
                    raise
                _not_writable(report, exc, root / name, problem)
                return None, 0, report
            report.cache = "built" if built else "hit"
    return _use_entry(report, manifest, limit, start)


def _use_entry(
    report: CompileReport, manifest: dict[str, Any] | None, limit: int, start: float
) -> tuple[Callable[..., torch.Tensor] | None, int, CompileReport]:
    """Load the entry's package if it passed the gate (and, for ``"auto"``, measured faster)."""
    if manifest is None:
        report.reason = "the compiled entry could not be written"
        return None, 0, report
    report.entry = str(manifest["folder"])
    report.parity_min_cos = float(manifest["parity_min_cos"])
    report.speedup = float(manifest["speedup"])
    if not manifest["parity_ok"]:
        report.reason = f"failed the parity gate (min cos {report.parity_min_cos:.7f})"
        return None, 0, report
    if report.choice == "auto" and report.speedup < 1 + MIN_GAIN:
        report.reason = f"compiled measured {report.speedup:.2f}x eager at build"
        return None, 0, report
    try:
        runner = torch._inductor.aoti_load_package(str(Path(report.entry) / PACKAGE))
    except Exception as exc:  # noqa: BLE001 - a package this torch cannot load is never used
        why = f"unloadable ({type(exc).__name__}: {exc})"
        gone = cache.remove_entry(Path(report.entry), why)
        fate = "removed; rebuilt next time" if gone else "could not be removed"
        report.reason = f"the cached package did not load ({fate})"
        return None, 0, report
    report.mode, report.seconds = "inductor", time.perf_counter() - start
    return runner, limit, report
