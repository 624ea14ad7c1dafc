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
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conan_rag.errors import ConanModelError, DeviceOutOfMemoryError, ForkedProcessError
from conan_rag.forking import ForkAware
from conan_rag.model.files import PYTORCH_BIN, SAFETENSORS, WEIGHT_FILES, download_hint
from conan_rag.model.modules import Head
from conan_rag.model.spec import ModelSpec
from conan_rag.runtime.compiled import CompileReport, bucket_width, setup_compiled
from conan_rag.runtime.devices import DTYPES
from conan_rag.runtime.varlen import embed_varlen, varlen_supported

logger = logging.getLogger(__name__)


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

    has_safetensors = (spec.path / SAFETENSORS).is_file()
    if not has_safetensors and not (spec.path / PYTORCH_BIN).is_file():
        raise ConanModelError(
            f"{spec.path} has neither {' nor '.join(WEIGHT_FILES)}: the transformer's weights "
            f"are missing. {download_hint(spec.path.name)}",
            path=spec.path,
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
        weights = SAFETENSORS if has_safetensors else PYTORCH_BIN
        raise ConanModelError(
            f"Cannot load the transformer from {spec.path} ({weights}): "
            f"{type(exc).__name__}: {str(exc)[:300]}. The folder is incomplete or corrupt "
            "(conan-rag loads .bin files only with weights_only=True); re-download the model.",
            path=spec.path / weights,
        ) from None
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing:
        raise ConanModelError(
            f"The weights in {spec.path} lack {len(missing)} tensors the architecture needs "
            f"(e.g. {missing[:3]}); the file is incomplete: re-download the model.",
            path=spec.path,
        )
    return model.eval()


def load_tokenizer(folder: Path) -> Any:
    """The fast tokenizer of a model folder: local files only, never code from the folder.

    Raises:
        ConanModelError: the folder has no usable tokenizer (the message says which files).
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(folder), use_fast=True, trust_remote_code=False, local_files_only=True
        )
    except Exception as exc:  # noqa: BLE001
        raise ConanModelError(
            f"Cannot load the tokenizer from {folder}: {type(exc).__name__}: "
            f"{str(exc)[:300]}. The folder needs tokenizer.json or vocab.txt; re-download the "
            "model.",
            path=folder,
        ) from None


class Backend(ForkAware):
    """Tokenizer + transformer + head on one device in one dtype. Thread-safe, fork-aware.

    In a process forked from the one that loaded it, a CPU backend keeps working (with fresh
    locks, torch on one thread); a CUDA backend raises
    :class:`~conan_rag.errors.ForkedProcessError` (CUDA cannot run in a forked child).

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
        super().__init__()
        self.spec = spec
        self.device = torch.device(device)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.tokenizer = load_tokenizer(spec.path)
        self.transformer = _load_transformer(spec, self.dtype).to(self.device)
        self.head = Head(spec).to(self.device).eval()
        # CPU float32: linear layers on the fastest GEMM here (conan_rag.runtime.cpu_kernels).
        self.cpu_kernel = "torch"
        if self.device.type == "cpu" and self.dtype == torch.float32:
            from conan_rag.runtime.cpu_kernels import apply_cpu_fast_path

            self.cpu_kernel = apply_cpu_fast_path(self.transformer, cpu_kernels).kernel
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        self._tokenizer_lock = threading.Lock()
        names = getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        self._wants_token_types = "token_type_ids" in names
        # One forward at a time, whoever calls (the batching queue's worker or direct callers).
        self._forward_lock = threading.Lock()
        # Padded tokens known to run out of device memory, halved: every caller's token budget
        # is capped by it (the callers' own budgets are never changed). None: no OOM seen.
        self.memory_cap: int | None = None
        # CUDA + BERT: unpadded forward (conan_rag.runtime.varlen); "padded" elsewhere.
        self.forward_mode = "padded"
        if self.device.type == "cuda" and varlen_supported(self.transformer):
            self.forward_mode = "varlen"
        self.forked_from_cuda = False  # set in a forked child: this backend's GPU is unusable
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
                token_types=self._wants_token_types,
                dtype=self.dtype_name,
                model_fingerprint=fingerprint,
                choice=choice,
                plain=plain,
            )
            self.compiled, self.compiled_limit, self.compile_report = runner, limit, report
        logger.info("%s %s on cpu: %s", self.spec.path.name, self.dtype_name, report.summary())
        return report

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held them mid-forward).

        A CPU backend also drops torch to one thread, as PyTorch's DataLoader workers do: GNU
        OpenMP's thread pool does not survive a fork, and a child whose forking thread had used
        it hangs in its first multi-threaded op.
        """
        self._tokenizer_lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self.forked_from_cuda = self.device.type == "cuda"
        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            torch.set_num_threads(1)

    @property
    def output_dim(self) -> int:
        """Dimension of the (un-truncated) vectors."""
        return self.spec.output_dim

    def budget(self, requested: int) -> int:
        """The token budget to plan with: ``requested``, capped by what fits in memory."""
        return requested if self.memory_cap is None else max(1, min(requested, self.memory_cap))

    # -- tokenization -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text, truncated at ``max_length`` tokens (special tokens included)."""
        if not texts:
            return []
        self._check_process()
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
    def _tensors(
        self, ids: Sequence[Sequence[int]], width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        longest = width or max(len(x) for x in ids)
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
        """Run one batch as given (no lock, no retry): un-normalized float32 vectors on the CPU.

        Raises:
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._check_process()
        if self.forked_from_cuda:
            raise ForkedProcessError(str(self.device))
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
        if self._wants_token_types:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if bool(attention.all()):
            del kwargs["attention_mask"]  # no padding: let SDPA take its mask-free kernel
        tokens = self.transformer(**kwargs).last_hidden_state
        return self.head(tokens, attention, prompt_length).float().cpu()

    def embed(self, ids: Sequence[Sequence[int]], prompt_length: int = 0) -> torch.Tensor:
        """Run one planned batch, one caller at a time; rows come back in input order.

        On CUDA out-of-memory the batch is split in halves (and :attr:`memory_cap` set so later
        plans stay below what failed); a single text that does not fit raises.

        Raises:
            DeviceOutOfMemoryError: one text alone does not fit on the device.
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._check_process()
        with self._forward_lock:
            return self._embed_splitting(ids, prompt_length)

    def _embed_splitting(self, ids: Sequence[Sequence[int]], prompt_length: int) -> torch.Tensor:
        try:
            return self.embed_ids(ids, prompt_length)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(ids) == 1:
                raise DeviceOutOfMemoryError(len(ids[0]), str(self.device)) from None
            cost = len(ids) * max(len(x) for x in ids)
            self.memory_cap = max(1, min(self.memory_cap or cost, cost) // 2)
            logger.warning("Out of memory: batches capped at %d padded tokens", self.memory_cap)
        half = len(ids) // 2
        first = self._embed_splitting(ids[:half], prompt_length)
        return torch.cat([first, self._embed_splitting(ids[half:], prompt_length)])
