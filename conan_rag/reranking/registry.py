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

from pathlib import Path
from typing import Any

from conan_rag.errors import ModelNotFoundError
from conan_rag.model.files import download_hint, resolve_model
from conan_rag.model_registry import MODELS, ModelKind, resolve_config
from conan_rag.reranking.config import DEFAULT_RERANKER, RerankerConfig
from conan_rag.reranking.reranker import Reranker
from conan_rag.reranking.runner import CrossEncoderRunner
from conan_rag.reranking.spec import read_cross_encoder_spec

__all__ = ["clear_rerankers", "load_reranker", "loaded_rerankers"]


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


KIND: ModelKind = "cross-encoder"


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
    got = resolve_config(base, config is not None, model, device, dtype, settings, _resolve)
    runner_key = (str(got.folder), got.config.revision, got.device, got.dtype)

    def load() -> CrossEncoderRunner:
        return CrossEncoderRunner(read_cross_encoder_spec(got.folder), got.device, got.dtype)

    return MODELS.get(
        KIND,
        runner_key,
        got.view_key(runner_key),
        load,
        lambda runner, queue: Reranker(got.config, runner, queue),
        got.device,
    )


def loaded_rerankers() -> int:
    """How many distinct cross-encoder weights this process has loaded (tests, diagnostics)."""
    return MODELS.loaded(KIND)


def clear_rerankers() -> None:
    """Forget every shared reranker (their memory is freed once no caller holds them)."""
    MODELS.clear(KIND)


# Rerankers exist only through load_reranker, so this module is loaded wherever one is pickled.
MODELS.register(KIND, Reranker, RerankerConfig, load_reranker)
