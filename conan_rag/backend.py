"""The loaded model: tokenizer, transformer and head on one device, and the batch forward pass.

One :class:`Backend` exists per (model folder, revision, device, dtype) in a process; every
:class:`~conan_rag.encoder.Encoder` view with those values shares it.

Example:
    >>> from conan_rag.model_files import read_model_spec, resolve_model
    >>> spec = read_model_spec(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    >>> backend = Backend(spec, device="cpu", dtype="float32")
    >>> backend.embed_ids([[101, 7592, 102]]).shape
    torch.Size([1, 384])
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from conan_rag.devices import DTYPES
from conan_rag.errors import DOWNLOAD_HINT, ConanModelError, ConanRagError
from conan_rag.model_files import ModelSpec
from conan_rag.modules import Head
from conan_rag.varlen import embed_varlen, varlen_supported

if TYPE_CHECKING:
    from conan_rag.queue import BatchQueue

logger = logging.getLogger(__name__)

# Padded tokens per batch. CPU: big enough to fill the cores' GEMMs, small enough for cache.
DEFAULT_TOKEN_BUDGET = {"cpu": 8192, "cuda": 65536, "mps": 16384}


def _quiet_transformers() -> None:
    """Silence transformers' load report and progress bars (we report problems ourselves)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


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

    _quiet_transformers()

    has_safetensors = (spec.path / "model.safetensors").is_file()
    if not has_safetensors and not (spec.path / "pytorch_model.bin").is_file():
        raise ConanModelError(
            f"{spec.path} has neither model.safetensors nor pytorch_model.bin: the "
            f"transformer's weights are missing. {DOWNLOAD_HINT}"
        )
    kwargs: dict[str, object] = {}
    if _model_type(spec) in _HAS_POOLER:
        kwargs["add_pooling_layer"] = False  # its pooler is unused: don't build or load it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModel.from_pretrained(
                str(spec.path),
                dtype=dtype,
                attn_implementation="sdpa",
                use_safetensors=has_safetensors,
                trust_remote_code=False,
                local_files_only=True,
                output_loading_info=True,
                **kwargs,
            )
    except Exception as exc:  # noqa: BLE001 - report every loader failure the same way
        weights = "model.safetensors" if has_safetensors else "pytorch_model.bin"
        raise ConanModelError(
            f"Cannot load the transformer from {spec.path} ({weights}): "
            f"{type(exc).__name__}: {str(exc)[:300]}. The folder is incomplete or corrupt "
            f"(conan-rag loads .bin files only with weights_only=True). {DOWNLOAD_HINT}"
        ) from None
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing:
        raise ConanModelError(
            f"The weights in {spec.path} lack {len(missing)} tensors the architecture needs "
            f"(e.g. {missing[:3]}); the file is incomplete. {DOWNLOAD_HINT}"
        )
    return model.eval()


def _load_tokenizer(spec: ModelSpec) -> object:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(spec.path), use_fast=True, trust_remote_code=False, local_files_only=True
        )
    except Exception as exc:  # noqa: BLE001
        raise ConanModelError(
            f"Cannot load the tokenizer from {spec.path}: {type(exc).__name__}: "
            f"{str(exc)[:300]}. The folder needs tokenizer.json or vocab.txt. {DOWNLOAD_HINT}"
        ) from None


class Backend:
    """Tokenizer + transformer + head on one device in one dtype. Thread-safe."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str,
        dtype: str,
        token_budget: int | None = None,
        cpu_kernels: str = "auto",
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.tokenizer = _load_tokenizer(spec)
        self.transformer = _load_transformer(spec, self.dtype).to(self.device)
        self.head = Head(spec).to(self.device).eval()
        # CPU float32: run the linear layers on the fastest GEMM here (conan_rag.cpu_kernels).
        self.cpu_kernel = "torch"
        if self.device.type == "cpu" and self.dtype == torch.float32:
            from conan_rag.cpu_kernels import apply_cpu_fast_path

            self.cpu_kernel = apply_cpu_fast_path(self.transformer, cpu_kernels).kernel
        kind = self.device.type if self.device.type in DEFAULT_TOKEN_BUDGET else "cpu"
        self.token_budget = token_budget or DEFAULT_TOKEN_BUDGET[kind]
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        self._tokenizer_lock = threading.Lock()
        names = getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        self._wants_token_types = "token_type_ids" in names
        # One forward at a time: the batching queue's worker, or callers that bypass it.
        self.forward_lock = threading.Lock()
        self._queue: BatchQueue | None = None
        # CUDA + BERT: unpadded forward (conan_rag.varlen); "padded" elsewhere.
        self.forward_mode = "padded"
        if self.device.type == "cuda" and varlen_supported(self.transformer):
            self.forward_mode = "varlen"

    @property
    def queue(self) -> BatchQueue:
        """The batching queue (one worker thread) every encode of this backend goes through."""
        if self._queue is None:
            from conan_rag.queue import BatchQueue

            with self.forward_lock:
                if self._queue is None:
                    self._queue = BatchQueue(self)
        return self._queue

    # -- tokenization -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text, truncated at ``max_length`` tokens (special tokens included)."""
        if not texts:
            return []
        with self._tokenizer_lock:  # fast tokenizers are not re-entrant ("Already borrowed")
            encoded = self.tokenizer(  # type: ignore[operator]
                list(texts),
                add_special_tokens=True,
                truncation=True,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        return list(encoded["input_ids"])

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt adds in front of a text (excluding a trailing special token)."""
        ids = self.tokenize([prompt], max_length=10_000)[0]
        special = set(getattr(self.tokenizer, "all_special_ids", []))
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

    # -- forward ------------------------------------------------------------------------------
    def _tensors(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(x) for x in ids)
        array = np.full((len(ids), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, seq in enumerate(ids):
            array[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        input_ids, attention = torch.from_numpy(array), torch.from_numpy(mask)
        if self.device.type == "cuda":
            input_ids = input_ids.pin_memory().to(self.device, non_blocking=True)
            attention = attention.pin_memory().to(self.device, non_blocking=True)
        return input_ids, attention

    @torch.inference_mode()
    def embed_ids(self, ids: Sequence[Sequence[int]], prompt_length: int = 0) -> torch.Tensor:
        """Run one batch; returns un-normalized float32 sentence vectors on the CPU."""
        if self.forward_mode == "varlen":
            return embed_varlen(self, ids, prompt_length)
        input_ids, attention = self._tensors(ids)
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention}
        if self._wants_token_types:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if bool(attention.all()):
            del kwargs["attention_mask"]  # no padding: let SDPA take its mask-free kernel
        tokens = self.transformer(**kwargs).last_hidden_state
        return self.head(tokens, attention, prompt_length).float().cpu()

    def embed_batches(
        self, ids: Sequence[Sequence[int]], batches: Sequence[Sequence[int]], prompt_length: int
    ) -> list[tuple[Sequence[int], torch.Tensor]]:
        """Run planned batches; on CUDA out-of-memory halve the budget and split the batch."""
        results: list[tuple[Sequence[int], torch.Tensor]] = []
        pending = list(batches)
        while pending:
            batch = pending.pop(0)
            try:
                results.append((batch, self.embed_ids([ids[i] for i in batch], prompt_length)))
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if len(batch) == 1:
                    raise ConanRagError(
                        f"Out of memory on {self.device} embedding one text of "
                        f"{len(ids[batch[0]])} tokens; lower max_seq_length or use another device."
                    ) from None
                self.token_budget = max(1, self.token_budget // 2)
                logger.warning("Out of memory: token budget halved to %d", self.token_budget)
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
        return results
