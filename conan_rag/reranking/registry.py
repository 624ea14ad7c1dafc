"""``load_reranker``: one :class:`~conan_rag.reranking.reranker.Reranker` per model and settings.

Loaded weights (a :class:`~conan_rag.reranking.runner.CrossEncoderRunner`) and their batching
queue are shared by every reranker on the same resolved folder, revision, device and dtype;
rerankers that differ only in settings (``max_length``, ``token_budget``, ...) are separate
views of those weights.

Example:
    >>> import tempfile
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = str(build_cross_encoder(tempfile.mkdtemp(), n_cjk=100))
    >>> reranker = load_reranker(folder, device="cpu")
    >>> reranker is load_reranker(folder, device="cpu")
    True
    >>> short = load_reranker(folder, device="cpu", max_length=32)
    >>> short.runner is reranker.runner, short.max_length
    (True, 32)
"""

from __future__ import annotations

import copyreg
import threading
from pathlib import Path
from typing import Any

from conan_rag.batching.queue import BatchQueue
from conan_rag.config import default_token_budget
from conan_rag.errors import ModelNotFoundError
from conan_rag.forking import after_fork_in_child
from conan_rag.model.files import canonical_model_id, download_hint, resolve_model
from conan_rag.reranking.config import DEFAULT_RERANKER, RerankerConfig
from conan_rag.reranking.reranker import Reranker
from conan_rag.reranking.runner import CrossEncoderRunner
from conan_rag.reranking.spec import read_cross_encoder_spec
from conan_rag.runtime.devices import resolve_device, resolve_dtype

_RunnerKey = tuple[str, str | None, str, str]
_registry_lock = threading.Lock()
_runners: dict[_RunnerKey, tuple[CrossEncoderRunner, BatchQueue]] = {}
_rerankers: dict[tuple[Any, ...], Reranker] = {}


def _new_lock_after_fork() -> None:
    """In a forked child: a fresh lock (a parent thread may have held it, e.g. loading)."""
    global _registry_lock
    _registry_lock = threading.Lock()


after_fork_in_child(_new_lock_after_fork)


def _resolve(model: str, revision: str | None) -> Path:
    """The model's folder; a missing folder's error names a reranker to download."""
    try:
        return resolve_model(model, revision)
    except ModelNotFoundError as exc:
        if model.count("/") == 1 and not model.startswith((".", "/", "~")):
            raise  # a hub id: the message already tells how to download that model
        raise ModelNotFoundError(
            f"Reranker folder {model!r} does not exist. {download_hint(DEFAULT_RERANKER)}",
            model=model,
            revision=revision,
        ) from exc


def load_reranker(
    model: str | Path | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    config: RerankerConfig | None = None,
    **settings: Any,
) -> Reranker:
    """Load (or reuse) the reranker for a ``CrossEncoder`` folder, shared in this process.

    Args:
        model: a CrossEncoder folder or a hub id in the local cache; default
            ``BAAI/bge-reranker-v2-m3``.
        device: ``"auto"`` picks cuda, then mps, then cpu.
        dtype: ``"auto"`` picks bf16 on CUDA (fp16 without bf16), bf16 on CPUs with native
            bf16, else float32.
        config: a whole :class:`~conan_rag.reranking.config.RerankerConfig`; ``model``/
            ``device``/``dtype``/``settings`` override its fields.
        **settings: other :class:`~conan_rag.reranking.config.RerankerConfig` fields
            (``max_length``, ``token_budget``, ``use_queue``, ...).

    Returns:
        The same :class:`~conan_rag.reranking.reranker.Reranker` for the same resolved model,
        revision, device, dtype and settings.

    Raises:
        ModelNotFoundError: the model is neither a folder nor in the local cache.
        ConanModelError: the folder is not a CrossEncoder, or is incomplete or corrupt.
        ConanConfigError: an unknown setting, device or dtype (the message lists valid ones).
    """
    base = config or RerankerConfig()
    changes: dict[str, Any] = dict(settings)
    if model is not None:
        changes["model"] = str(model)
    if config is None or device != "auto":
        changes["device"] = device
    if config is None or dtype != "auto":
        changes["dtype"] = dtype
    cfg = base.replace(**changes)
    folder = _resolve(cfg.model, cfg.revision)
    resolved_device = resolve_device(cfg.device)
    resolved_dtype = resolve_dtype(cfg.dtype, resolved_device)
    runner_key = (str(folder), cfg.revision, resolved_device, resolved_dtype)
    cfg = cfg.replace(model=canonical_model_id(folder))  # one spelling per model
    reranker_key = (
        *runner_key,
        *sorted(cfg.replace(model="", device="", dtype="").to_dict().items()),
    )
    with _registry_lock:
        reranker = _rerankers.get(reranker_key)
        if reranker is not None:
            return reranker
        shared = _runners.get(runner_key)
        if shared is None:
            spec = read_cross_encoder_spec(folder)
            runner = CrossEncoderRunner(spec, resolved_device, resolved_dtype)
            shared = (runner, BatchQueue(runner, default_token_budget(resolved_device)))
            _runners[runner_key] = shared
        reranker = Reranker(cfg, *shared)
        _rerankers[reranker_key] = reranker
        return reranker


def loaded_rerankers() -> int:
    """How many distinct cross-encoder weights this process has loaded (tests, diagnostics)."""
    with _registry_lock:
        return len(_runners)


def clear_rerankers() -> None:
    """Forget every shared reranker (their memory is freed once no caller holds them)."""
    with _registry_lock:
        _rerankers.clear()
        _runners.clear()


def _restore(config: dict[str, Any]) -> Reranker:
    """Unpickle a :class:`~conan_rag.reranking.reranker.Reranker`: this process's shared one."""
    return load_reranker(config=RerankerConfig.from_dict(config))


def _reduce(reranker: Reranker) -> tuple[Any, ...]:
    """Pickle a reranker by its settings, never its weights.

    Example:
        >>> import pickle, tempfile
        >>> from conan_rag.testing import build_cross_encoder
        >>> reranker = load_reranker(build_cross_encoder(tempfile.mkdtemp(), n_cjk=9))
        >>> pickle.loads(pickle.dumps(reranker)) is reranker
        True
    """
    return (_restore, (reranker.config.to_dict(),))


# Rerankers exist only through load_reranker, so this module is loaded wherever one is pickled.
copyreg.pickle(Reranker, _reduce)
