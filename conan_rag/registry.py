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

from typing import Any

from conan_rag.config import EncoderConfig
from conan_rag.encoder import Encoder
from conan_rag.model.files import resolve_model
from conan_rag.model.spec import read_model_spec
from conan_rag.model_registry import MODELS, ModelKind, resolve_config
from conan_rag.runtime.backend import Backend

__all__ = ["clear_registry", "load_encoder", "loaded_backends"]

KIND: ModelKind = "embedding"


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
    got = resolve_config(base, config is not None, model, device, dtype, settings, resolve_model)
    cfg = got.config
    # The CPU linear kernels (conan_rag.runtime.cpu_kernels) only apply to float32 on the CPU.
    cpu_fp32 = got.device == "cpu" and got.dtype == "float32"
    kernels = cfg.cpu_kernels if cpu_fp32 else "off"
    compiled = cfg.compile if got.device == "cpu" else "off"  # conan_rag.runtime.compiled
    runner_key = (str(got.folder), cfg.revision, got.device, got.dtype, kernels, compiled)

    def load() -> Backend:
        return Backend(read_model_spec(got.folder), got.device, got.dtype, kernels, compiled)

    return MODELS.get(
        KIND,
        runner_key,
        got.view_key(runner_key),
        load,
        lambda backend, queue: Encoder(cfg, backend, queue),
        got.device,
    )


def loaded_backends() -> int:
    """How many distinct sets of weights this process has loaded (for tests and diagnostics)."""
    return MODELS.loaded(KIND)


def clear_registry() -> None:
    """Forget every shared encoder (their memory is freed once no caller holds them)."""
    MODELS.clear(KIND)


def __getattr__(name: str) -> Any:
    """``_registry_lock``: the shared registry's lock as it is now (fresh in a forked child)."""
    if name == "_registry_lock":
        return MODELS.lock
    raise AttributeError(f"module 'conan_rag.registry' has no attribute {name!r}")


# Encoders exist only through load_encoder, so this module is loaded wherever one is pickled.
MODELS.register(KIND, Encoder, EncoderConfig, load_encoder)
