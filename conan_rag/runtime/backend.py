"""The loaded model: tokenizer, transformer and head on one device, and the batch forward pass.

One :class:`Backend` exists per (model folder, revision, device, dtype) in a process; every
:class:`~conan_rag.encoder.Encoder` view with those values shares it. It implements the
:class:`~conan_rag.batching.queue.BatchRunner` protocol the batching queue runs batches through.

Example:
    >>> from conan_rag.model.files import resolve_model
    >>> from conan_rag.model.spec import read_model_spec
    >>> spec = read_model_spec(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    >>> backend = Backend(spec, device="cpu", dtype="float32")
    >>> backend.embed([[101, 7592, 102]]).shape
    torch.Size([1, 384])
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from conan_rag.errors import ConanModelError
from conan_rag.model.files import PYTORCH_BIN, SAFETENSORS, WEIGHT_FILES, download_hint
from conan_rag.model.modules import Head
from conan_rag.model.spec import ModelSpec
from conan_rag.runtime.compiled import CompileReport, bucket_width, setup_compiled
from conan_rag.runtime.runner import ModelRunner, load_pretrained, load_tokenizer
from conan_rag.runtime.varlen import embed_varlen, varlen_supported

__all__ = ["Backend", "load_tokenizer"]

logger = logging.getLogger(__name__)


# Architectures whose AutoModel builds a pooler (taking add_pooling_layer) we never use.
_HAS_POOLER = frozenset({"bert", "roberta", "xlm-roberta", "ernie", "camembert", "nezha"})


def _model_type(spec: ModelSpec) -> str:
    try:
        config = json.loads((spec.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("model_type", "")) if isinstance(config, dict) else ""


def _load_transformer(spec: ModelSpec, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModel

    if not (spec.path / SAFETENSORS).is_file() and not (spec.path / PYTORCH_BIN).is_file():
        raise ConanModelError(
            f"{spec.path} has neither {' nor '.join(WEIGHT_FILES)}: the transformer's weights "
            f"are missing. {download_hint(spec.path.name)}",
            path=spec.path,
        )
    kwargs: dict[str, object] = {}
    if _model_type(spec) in _HAS_POOLER:
        kwargs["add_pooling_layer"] = False  # its pooler is unused: don't build or load it
    model, missing = load_pretrained(AutoModel, spec.path, dtype, "transformer", **kwargs)
    missing = [k for k in missing if "pooler" not in k]
    if missing:
        raise ConanModelError(
            f"The weights in {spec.path} lack {len(missing)} tensors the architecture needs "
            f"(e.g. {missing[:3]}); the file is incomplete: re-download the model.",
            path=spec.path,
        )
    return model  # type: ignore[no-any-return]


class Backend(ModelRunner):
    """Tokenizer + transformer + head on one device in one dtype: the embedding runner.

    Thread-safe and fork-aware as every :class:`~conan_rag.runtime.runner.ModelRunner`; its
    batches give un-normalized float32 vectors.

    Args:
        spec: the model folder's spec.
        device: a resolved device (``"cpu"``, ``"cuda:0"``, ...).
        dtype: a resolved dtype name (a key of :data:`~conan_rag.runtime.devices.DTYPES`).
        cpu_kernels: the CPU float32 kernel choice (see :mod:`conan_rag.runtime.cpu_kernels`).
        compile: the compiled CPU forward choice (see :mod:`conan_rag.runtime.compiled`).
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: str,
        dtype: str,
        cpu_kernels: str = "auto",
        compile: str = "off",
    ) -> None:
        super().__init__(spec.path, device, dtype)
        self.spec = spec
        self.transformer = _load_transformer(spec, self.dtype).to(self.device)
        self.head = Head(spec).to(self.device).eval()
        # CPU float32: linear layers on the fastest GEMM here (conan_rag.runtime.cpu_kernels).
        self.cpu_kernel = "torch"
        if self.device.type == "cpu" and self.dtype == torch.float32:
            from conan_rag.runtime.cpu_kernels import apply_cpu_fast_path

            self.cpu_kernel = apply_cpu_fast_path(self.transformer, cpu_kernels).kernel
        # CUDA + BERT: unpadded forward (conan_rag.runtime.varlen); "padded" elsewhere.
        self.forward_mode = "padded"
        if self.device.type == "cuda" and varlen_supported(self.transformer):
            self.forward_mode = "varlen"
        # CPU: the compiled forward (conan_rag.runtime.compiled) when it is cached or asked for.
        self.compiled: Any = None
        self.compiled_limit = 0
        self.compile_report = CompileReport(compile, reason="not on the CPU")
        if self.device.type == "cpu":
            self.use_compiled(compile)

    def use_compiled(self, choice: str) -> CompileReport:
        """Load, build or drop the compiled CPU forward as ``choice`` says; returns the decision.

        ``"auto"`` loads a cached entry, ``"inductor"`` builds one first if missing, ``"off"``
        drops it (see :func:`~conan_rag.runtime.compiled.setup_compiled`). Forwards wait
        meanwhile. The decision is logged and kept in :attr:`compile_report`.
        """
        from conan_rag.model.fingerprint import model_fingerprint
        from conan_rag.runtime.cpu_kernels import apply_cpu_fast_path, remove_cpu_fast_path

        fingerprint = model_fingerprint(self.spec.path, [], {}) if choice != "off" else ""

        @contextlib.contextmanager
        def plain() -> Iterator[None]:  # export traces torch's own linear layers
            remove_cpu_fast_path(self.transformer)
            try:
                yield
            finally:
                if self.cpu_kernel != "torch":
                    apply_cpu_fast_path(self.transformer, self.cpu_kernel)

        with self._forward_lock:
            runner, limit, report = setup_compiled(
                self.transformer,
                token_types=self.wants_token_types,
                dtype=self.dtype_name,
                model_fingerprint=fingerprint,
                choice=choice,
                plain=plain,
            )
            self.compiled, self.compiled_limit, self.compile_report = runner, limit, report
        logger.info("%s %s on cpu: %s", self.spec.path.name, self.dtype_name, report.summary())
        return report

    @property
    def output_dim(self) -> int:
        """Dimension of the (un-truncated) vectors."""
        return self.spec.output_dim

    # -- tokenization -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text, truncated at ``max_length`` tokens (special tokens included)."""
        if not texts:
            return []
        encoded = self._encode(list(texts), None, max_length, truncation=True, token_types=False)
        return list(encoded["input_ids"])

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt adds in front of a text (excluding a trailing special token)."""
        ids = self.tokenize([prompt], max_length=10_000)[0]
        special = set(getattr(self.tokenizer, "all_special_ids", []))
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

    # -- forward ------------------------------------------------------------------------------
    def _tensors(
        self, ids: Sequence[Sequence[int]], width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        array, mask = self._padded(ids, width)
        return self._on_device(array), self._on_device(mask)

    @torch.inference_mode()
    def embed_ids(self, ids: Sequence[Sequence[int]], prompt_length: int = 0) -> torch.Tensor:
        """Run one batch as given (no lock, no retry): un-normalized float32 vectors on the CPU.

        Raises:
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._ready()
        if self.forward_mode == "varlen":
            return embed_varlen(self.transformer, self.head, ids, prompt_length)
        compiled = self.compiled
        width = bucket_width(max(len(x) for x in ids), self.compiled_limit) if compiled else None
        if width is not None:  # compiled: padded to its bucket, always with a mask
            input_ids, attention = self._tensors(ids, width)
            tokens = compiled(input_ids, attention)
            return self.head(tokens, attention, prompt_length).float().cpu()
        input_ids, attention = self._tensors(ids)
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention}
        if self.wants_token_types:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if bool(attention.all()):
            del kwargs["attention_mask"]  # no padding: let SDPA take its mask-free kernel
        tokens = self.transformer(**kwargs).last_hidden_state
        return self.head(tokens, attention, prompt_length).float().cpu()

    def run_batch(self, rows: Sequence[Any], prompt_length: int = 0) -> torch.Tensor:
        """:meth:`embed_ids`: what :meth:`~conan_rag.runtime.runner.ModelRunner.embed` runs."""
        return self.embed_ids(rows, prompt_length)
