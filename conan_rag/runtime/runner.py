"""The base of every loaded model: device, dtype, tokenizer, locks, memory cap, OOM split.

A :class:`ModelRunner` holds one model kind's tokenizer and weights on one device in one dtype
and runs planned batches through :meth:`ModelRunner.embed`: one forward at a time (a lock),
a batch that runs out of CUDA memory split in halves (and :attr:`ModelRunner.memory_cap` set so
later plans stay below what failed), fresh locks in a forked child. Its subclasses say what a
batch computes: :class:`~conan_rag.runtime.backend.Backend` (embedding vectors) and
:class:`~conan_rag.reranking.runner.CrossEncoderRunner` (a cross-encoder's logits); both meet
the batching queue's :class:`~conan_rag.batching.requests.BatchRunner` protocol.

Example:
    >>> import torch
    >>> class Doubler(ModelRunner):
    ...     output_dim = 1
    ...     def run_batch(self, rows, prompt_length=0):
    ...         return torch.tensor([[2.0 * len(r)] for r in rows])
    >>> from conan_rag.model.files import BUNDLED_MINILM, resolve_model
    >>> runner = Doubler(resolve_model(BUNDLED_MINILM), "cpu", "float32")
    >>> runner.embed([[1, 2], [3]]).tolist()
    [[4.0], [2.0]]
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conan_rag.errors import ConanModelError, DeviceOutOfMemoryError, ForkedProcessError
from conan_rag.forking import ForkAware
from conan_rag.model.files import PYTORCH_BIN, SAFETENSORS
from conan_rag.runtime.devices import DTYPES

__all__ = ["ModelRunner", "load_pretrained", "load_tokenizer"]

logger = logging.getLogger(__name__)


def _quiet_transformers() -> None:
    """Silence transformers' load report and progress bars (we report problems ourselves)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


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


def load_pretrained(
    auto_class: Any, folder: Path, dtype: torch.dtype, what: str, **kwargs: Any
) -> tuple[Any, list[str]]:
    """``auto_class.from_pretrained`` on local files, never code from the folder.

    Args:
        auto_class: a transformers ``Auto*`` class.
        folder: the folder holding ``config.json`` and the weights.
        dtype: the dtype to load in.
        what: what the model is, for the error message (``"transformer"``, ...).
        **kwargs: more ``from_pretrained`` arguments.

    Returns:
        The model (in eval mode) and the names of the tensors its weights lack.

    Raises:
        ConanModelError: the weights do not load (the message says which file).
    """
    _quiet_transformers()
    has_safetensors = (folder / SAFETENSORS).is_file()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = auto_class.from_pretrained(
                str(folder),
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
            f"Cannot load the {what} from {folder} ({weights}): "
            f"{type(exc).__name__}: {str(exc)[:300]}. The folder is incomplete or corrupt "
            "(conan-rag loads .bin files only with weights_only=True); re-download the model.",
            path=folder / weights,
        ) from None
    return model.eval(), list(info.get("missing_keys", []))


class ModelRunner(ForkAware):
    """A tokenizer and weights on one device in one dtype. Thread-safe, fork-aware.

    In a process forked from the one that loaded it, a CPU runner keeps working (with fresh
    locks, torch on one thread); a CUDA runner raises
    :class:`~conan_rag.errors.ForkedProcessError` (CUDA cannot run in a forked child).
    Subclasses load their weights after ``super().__init__``, and implement :attr:`output_dim`
    and :meth:`run_batch`.

    Args:
        tokenizer_folder: the folder holding the tokenizer.
        device: a resolved device (``"cpu"``, ``"cuda:0"``, ...).
        dtype: a resolved dtype name (a key of :data:`~conan_rag.runtime.devices.DTYPES`).
    """

    def __init__(self, tokenizer_folder: Path, device: str, dtype: str) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.tokenizer = load_tokenizer(tokenizer_folder)
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        names = getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        self.wants_token_types = "token_type_ids" in names
        self._tokenizer_lock = threading.Lock()
        # One forward at a time, whoever calls (the batching queue's worker or direct callers).
        self._forward_lock = threading.Lock()
        # Padded tokens known to run out of device memory, halved: every caller's token budget
        # is capped by it (the callers' own budgets are never changed). None: no OOM seen.
        self.memory_cap: int | None = None
        self.forked_from_cuda = False  # set in a forked child: this runner's GPU is unusable

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held them mid-forward).

        A CPU runner also drops torch to one thread, as PyTorch's DataLoader workers do: GNU
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
        """Width of what :meth:`run_batch` returns per row."""
        raise NotImplementedError

    def budget(self, requested: int) -> int:
        """The token budget to plan with: ``requested``, capped by what fits in memory."""
        return requested if self.memory_cap is None else max(1, min(requested, self.memory_cap))

    # -- tokenization -------------------------------------------------------------------------
    def _encode(
        self,
        first: list[str],
        second: list[str] | None,
        max_length: int,
        truncation: bool | str,
        token_types: bool,
    ) -> dict[str, list[list[int]]]:
        """Token ids (and type ids) for ``first`` (and ``second``: pairs), one call at a time.

        Fast tokenizers are configured as ``tokenizer(...)`` configures them (truncation,
        special tokens) and their Rust ``encode_batch`` read for ids only: the same ids, about
        as fast, without transformers' per-text Python conversion, during which an event loop's
        thread at times could not get the GIL for 0.2 s per 2,000 texts
        (``benchmarks/tokenization.py`` prints the longest loop gap of each path).
        """
        self._check_process()
        with self._tokenizer_lock:  # fast tokenizers are not re-entrant ("Already borrowed")
            if not getattr(self.tokenizer, "is_fast", False):
                encoded = self.tokenizer(
                    first,
                    second,
                    add_special_tokens=True,
                    truncation=truncation,
                    max_length=max_length,
                    padding=False,
                    return_attention_mask=False,
                    return_token_type_ids=token_types,
                )
                return dict(encoded)
            backend = self._configured_backend(max_length, truncation)
            inputs: list[Any] = first if second is None else list(zip(first, second, strict=True))
            encodings = backend.encode_batch(inputs, add_special_tokens=True)
        out = {"input_ids": [e.ids for e in encodings]}
        if token_types:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        return out

    def _configured_backend(self, max_length: int, truncation: bool | str) -> Any:
        """The fast tokenizer's Rust tokenizer, set up as ``tokenizer(...)`` sets it up."""
        from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

        tok = self.tokenizer
        if isinstance(truncation, bool):
            strategy = TruncationStrategy("longest_first" if truncation else "do_not_truncate")
        else:
            strategy = TruncationStrategy(truncation)
        tok.set_truncation_and_padding(
            padding_strategy=PaddingStrategy.DO_NOT_PAD,
            truncation_strategy=strategy,
            max_length=max_length,
            stride=0,
            pad_to_multiple_of=None,
            padding_side=None,
        )
        backend = tok.backend_tokenizer
        split = bool(getattr(tok, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
        return backend

    # -- forward ------------------------------------------------------------------------------
    def _padded(
        self, ids: Sequence[Sequence[int]], width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded token ids and their attention mask, ``(rows, width or longest)``."""
        longest = width or max(len(x) for x in ids)
        array = np.full((len(ids), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, seq in enumerate(ids):
            array[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return array, mask

    def _on_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array as a tensor on this runner's device (pinned, non-blocking on CUDA)."""
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _ready(self) -> None:
        """Check, before a forward pass, that this process can run the model.

        Raises:
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._check_process()
        if self.forked_from_cuda:
            raise ForkedProcessError(str(self.device))

    def run_batch(self, rows: Sequence[Any], prompt_length: int = 0) -> torch.Tensor:
        """Run one batch as given (no lock, no retry): float32 ``(rows, output_dim)`` on the CPU."""
        raise NotImplementedError

    def embed(self, rows: Sequence[Any], prompt_length: int = 0) -> torch.Tensor:
        """Run one planned batch, one caller at a time; rows come back in input order.

        On CUDA out-of-memory the batch is split in halves (and :attr:`memory_cap` set so later
        plans stay below what failed); a single row that does not fit raises.

        Raises:
            DeviceOutOfMemoryError: one row alone does not fit on the device.
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._check_process()
        with self._forward_lock:
            return self._splitting(rows, prompt_length)

    def _splitting(self, rows: Sequence[Sized], prompt_length: int) -> torch.Tensor:
        try:
            return self.run_batch(rows, prompt_length)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(rows) == 1:
                raise DeviceOutOfMemoryError(len(rows[0]), str(self.device)) from None
            cost = len(rows) * max(len(r) for r in rows)
            self.memory_cap = max(1, min(self.memory_cap or cost, cost) // 2)
            logger.warning("Out of memory: batches capped at %d padded tokens", self.memory_cap)
        half = len(rows) // 2
        first = self._splitting(rows[:half], prompt_length)
        return torch.cat([first, self._splitting(rows[half:], prompt_length)])
