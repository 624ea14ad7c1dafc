"""``load_encoder``: one :class:`~conan_rag.encoder.Encoder` per model and settings, per process.

Loaded weights (a :class:`~conan_rag.runtime.backend.Backend`) and their batching queue are
shared by every encoder on the same resolved folder, revision, device, dtype, CPU kernels and
compile choice; encoders that differ only in settings (prompts, ``truncate_dim``,
``token_budget``, ...) are separate views of those weights, each keeping its own settings.

Example:
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> enc is load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    True
    >>> name = "sentence-transformers/all-MiniLM-L6-v2"
    >>> small = load_encoder(name, device="cpu", token_budget=512)
    >>> small.backend is enc.backend, small.token_budget
    (True, 512)
"""

from __future__ import annotations

import copyreg
import threading
from typing import Any

from conan_rag.batching.queue import BatchQueue
from conan_rag.config import EncoderConfig, default_token_budget
from conan_rag.encoder import Encoder
from conan_rag.forking import after_fork_in_child
from conan_rag.model.files import canonical_model_id, resolve_model
from conan_rag.model.spec import read_model_spec
from conan_rag.runtime.backend import Backend
from conan_rag.runtime.devices import resolve_device, resolve_dtype

_BackendKey = tuple[str, str | None, str, str, str, str]
_registry_lock = threading.Lock()
_backends: dict[_BackendKey, tuple[Backend, BatchQueue]] = {}
_encoders: dict[tuple[Any, ...], Encoder] = {}


def _new_lock_after_fork() -> None:
    """In a forked child: a fresh lock (a parent thread may have held it, e.g. loading)."""
    global _registry_lock
    _registry_lock = threading.Lock()


after_fork_in_child(_new_lock_after_fork)


def load_encoder(
    model: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    config: EncoderConfig | None = None,
    **settings: Any,
) -> Encoder:
    """Load (or reuse) the encoder for a model, shared by every caller in this process.

    Args:
        model: model folder, hub id in the local cache, or
            ``"sentence-transformers/all-MiniLM-L6-v2"``; default Conan-embedding-v1.
        device: ``"auto"`` picks cuda, then mps, then cpu.
        dtype: ``"auto"`` picks bf16 on CUDA (fp16 without bf16), bf16 on CPUs with native
            bf16, else float32.
        config: a whole :class:`~conan_rag.config.EncoderConfig`; ``model``/``device``/
            ``dtype``/``settings`` override its fields.
        **settings: other :class:`~conan_rag.config.EncoderConfig` fields (``truncate_dim``,
            ``query_prompt``, ``token_budget``, ...).

    Returns:
        The same :class:`~conan_rag.encoder.Encoder` for the same resolved model, revision,
        device, dtype and settings; encoders differing only in settings share one set of weights.

    Raises:
        ModelNotFoundError: the model is neither a folder nor in the local cache.
        ConanModelError: the model folder is incomplete or corrupt.
        ConanConfigError: an unknown setting, device or dtype (the message lists valid ones).

    Example:
        >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", truncate_dim=128)
        >>> enc.dim
        128
    """
    base = config or EncoderConfig()
    changes: dict[str, Any] = dict(settings)
    if model is not None:
        changes["model"] = str(model)
    if config is None or device != "auto":
        changes["device"] = device
    if config is None or dtype != "auto":
        changes["dtype"] = dtype
    cfg = base.replace(**changes)
    folder = resolve_model(cfg.model, cfg.revision)
    resolved_device = resolve_device(cfg.device)
    resolved_dtype = resolve_dtype(cfg.dtype, resolved_device)
    # The CPU linear kernels (conan_rag.runtime.cpu_kernels) only apply to float32 on the CPU.
    cpu_fp32 = resolved_device == "cpu" and resolved_dtype == "float32"
    kernels = cfg.cpu_kernels if cpu_fp32 else "off"
    compiled = cfg.compile if resolved_device == "cpu" else "off"  # conan_rag.runtime.compiled
    backend_key = (str(folder), cfg.revision, resolved_device, resolved_dtype, kernels, compiled)
    cfg = cfg.replace(model=canonical_model_id(folder))  # one spelling per model, loadable anywhere
    encoder_key = (
        *backend_key,
        *sorted(cfg.replace(model="", device="", dtype="").to_dict().items()),
    )
    with _registry_lock:
        encoder = _encoders.get(encoder_key)
        if encoder is not None:
            return encoder
        shared = _backends.get(backend_key)
        if shared is None:
            spec = read_model_spec(folder)
            backend = Backend(spec, resolved_device, resolved_dtype, kernels, compiled)
            shared = (backend, BatchQueue(backend, default_token_budget(resolved_device)))
            _backends[backend_key] = shared
        encoder = Encoder(cfg, *shared)
        _encoders[encoder_key] = encoder
        return encoder


def loaded_backends() -> int:
    """How many distinct sets of weights this process has loaded (for tests and diagnostics)."""
    with _registry_lock:
        return len(_backends)


def clear_registry() -> None:
    """Forget every shared encoder (their memory is freed once no caller holds them)."""
    with _registry_lock:
        _encoders.clear()
        _backends.clear()


def _restore(config: dict[str, Any]) -> Encoder:
    """Unpickle an :class:`~conan_rag.encoder.Encoder`: this process's shared one for ``config``."""
    return load_encoder(config=EncoderConfig.from_dict(config))


def _reduce(encoder: Encoder) -> tuple[Any, ...]:
    """Pickle an encoder by its settings, never its weights.

    Example:
        >>> import pickle
        >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> pickle.loads(pickle.dumps(enc)) is enc
        True
    """
    return (_restore, (encoder.config.to_dict(),))


# Encoders exist only through load_encoder, so this module is loaded wherever one is pickled.
copyreg.pickle(Encoder, _reduce)
