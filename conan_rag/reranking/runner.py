"""The loaded cross-encoder: tokenizer and sequence-classification model on one device.

:class:`CrossEncoderRunner` implements the :class:`~conan_rag.batching.requests.BatchRunner`
protocol, so the same :class:`~conan_rag.batching.queue.BatchQueue` that batches embeddings
batches (query, passage) pairs: a row is one pair's token ids, already joined by the tokenizer
with its special tokens (``[CLS] q [SEP] p [SEP]``, ``<s> q </s></s> p </s>``), and the
"vectors" it returns are the pair's logits, ``(rows, num_labels)``.

Segment ids: BERT-style models need ``token_type_ids`` (0 for the query's segment, 1 for the
passage's); XLM-R does not take them. The queue carries rows as lists of token ids, and hands
the runner the very row objects it was given. So :meth:`CrossEncoderRunner.tokenize_pairs`
returns :class:`PairRow` rows: lists of token ids (whose length is what the queue budgets)
that also carry the tokenizer's own segment ids, which :meth:`CrossEncoderRunner.embed`
pads next to the ids. The queue needs no change and never looks inside a row.

Example:
    >>> import tempfile
    >>> from conan_rag.reranking.spec import read_cross_encoder_spec
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=100)
    >>> runner = CrossEncoderRunner(read_cross_encoder_spec(folder), "cpu", "float32")
    >>> rows = runner.tokenize_pairs(["a cat"], ["the dog"], runner.max_seq_length)
    >>> len(rows[0]), rows[0].type_ids
    (7, [0, 0, 0, 0, 1, 1, 1])
    >>> runner.embed(rows).shape
    torch.Size([1, 1])
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from conan_rag.errors import ConanModelError, DeviceOutOfMemoryError, ForkedProcessError
from conan_rag.forking import ForkAware
from conan_rag.model.files import PYTORCH_BIN, SAFETENSORS
from conan_rag.reranking.spec import CrossEncoderSpec
from conan_rag.runtime.backend import load_tokenizer
from conan_rag.runtime.devices import DTYPES

logger = logging.getLogger(__name__)


class PairRow(list[int]):
    """Token ids of one tokenized pair (special tokens included), with its segment ids.

    Example:
        >>> row = PairRow([101, 7, 102, 8, 102], [0, 0, 0, 1, 1])
        >>> len(row), row.type_ids
        (5, [0, 0, 0, 1, 1])
    """

    __slots__ = ("type_ids",)

    def __init__(self, ids: Iterable[int], type_ids: Sequence[int] | None = None) -> None:
        super().__init__(ids)
        self.type_ids: list[int] | None = list(type_ids) if type_ids is not None else None


def _load_model(spec: CrossEncoderSpec, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # we report problems ourselves
    hf_logging.disable_progress_bar()
    has_safetensors = (spec.model_path / SAFETENSORS).is_file()
    weights = SAFETENSORS if has_safetensors else PYTORCH_BIN
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(spec.model_path),
                dtype=dtype,
                attn_implementation="sdpa",
                use_safetensors=has_safetensors,
                weights_only=True,  # a .bin is read with torch.load(weights_only=True)
                trust_remote_code=False,
                local_files_only=True,
                output_loading_info=True,
            )
    except Exception as exc:  # noqa: BLE001 - report every loader failure the same way
        raise ConanModelError(
            f"Cannot load the cross-encoder from {spec.model_path} ({weights}): "
            f"{type(exc).__name__}: {str(exc)[:300]}. The folder is incomplete or corrupt "
            "(conan-rag loads .bin files only with weights_only=True); re-download the model.",
            path=spec.model_path / weights,
        ) from None
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ConanModelError(
            f"The weights in {spec.model_path} lack {len(missing)} tensors the architecture "
            f"needs (e.g. {missing[:3]}); the file is incomplete or holds no trained "
            "classification head: re-download the model.",
            path=spec.model_path / weights,
        )
    return model.eval()  # a *ForSequenceClassification module


class CrossEncoderRunner(ForkAware):
    """Tokenizer + ``*ForSequenceClassification`` model on one device. Thread-safe, fork-aware.

    Args:
        spec: the folder's spec.
        device: a resolved device (``"cpu"``, ``"cuda:0"``, ...).
        dtype: a resolved dtype name (a key of :data:`~conan_rag.runtime.devices.DTYPES`).
    """

    def __init__(self, spec: CrossEncoderSpec, device: str, dtype: str) -> None:
        super().__init__()
        self.spec = spec
        self.device = torch.device(device)
        self.dtype_name = dtype
        self.tokenizer = load_tokenizer(spec.model_path)
        self.model = _load_model(spec, DTYPES[dtype]).to(self.device)
        self.num_labels = int(self.model.config.num_labels)
        # sentence-transformers' limit: the folder's own, else the tokenizer's capped by the
        # position embeddings.
        limit = int(self.tokenizer.model_max_length)
        positions = spec.max_position_embeddings
        if spec.max_seq_length is not None:
            limit = spec.max_seq_length
        elif positions is not None and positions != -1:
            limit = min(limit, positions)
        self.max_seq_length = limit
        self.pad_id = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        names = getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        self.wants_token_types = "token_type_ids" in names
        self._tokenizer_lock = threading.Lock()
        self._forward_lock = threading.Lock()
        # Padded tokens known to run out of device memory, halved (None: no OOM seen).
        self.memory_cap: int | None = None
        self.forked_from_cuda = False

    def _after_fork(self) -> None:
        """In a forked child: fresh locks; a CPU runner drops torch to one thread (see queue)."""
        self._tokenizer_lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self.forked_from_cuda = self.device.type == "cuda"
        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            torch.set_num_threads(1)

    @property
    def output_dim(self) -> int:
        """Logits per pair (the head's labels)."""
        return self.num_labels

    def budget(self, requested: int) -> int:
        """The token budget to plan with: ``requested``, capped by what fits in memory."""
        return requested if self.memory_cap is None else max(1, min(requested, self.memory_cap))

    # -- tokenization -------------------------------------------------------------------------
    def tokenize_pairs(
        self, queries: Sequence[str], passages: Sequence[str], max_length: int
    ) -> list[PairRow]:
        """One row per pair, truncated as sentence-transformers does (``"longest_first"``)."""
        return self._tokenize(list(queries), list(passages), max_length)

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Rows for single texts (one segment), for the queue's text requests."""
        return list(self._tokenize(list(texts), None, max_length))

    def _tokenize(
        self, first: list[str], second: list[str] | None, max_length: int
    ) -> list[PairRow]:
        if not first:
            return []
        self._check_process()
        with self._tokenizer_lock:  # fast tokenizers are not re-entrant ("Already borrowed")
            encoded = self.tokenizer(
                first,
                second,
                add_special_tokens=True,
                truncation="longest_first",
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=self.wants_token_types,
            )
        types = encoded.get("token_type_ids") if self.wants_token_types else None
        return [
            PairRow(ids, None if types is None else types[i])
            for i, ids in enumerate(encoded["input_ids"])
        ]

    # -- forward ------------------------------------------------------------------------------
    def _inputs(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        longest = max(len(r) for r in rows)
        ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        types = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
            type_ids = getattr(row, "type_ids", None)
            if type_ids is not None:
                types[i, : len(row)] = type_ids
        arrays = {"input_ids": ids, "attention_mask": mask}
        if self.wants_token_types:
            arrays["token_type_ids"] = types
        if bool(mask.all()):
            del arrays["attention_mask"]  # no padding: let SDPA take its mask-free kernel
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        if self.device.type == "cuda":
            tensors = {
                k: v.pin_memory().to(self.device, non_blocking=True) for k, v in tensors.items()
            }
        return tensors

    @torch.inference_mode()
    def logits(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Run one batch as given (no lock, no retry): float32 logits ``(rows, num_labels)``.

        Raises:
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._check_process()
        if self.forked_from_cuda:
            raise ForkedProcessError(str(self.device))
        return self.model(**self._inputs(rows)).logits.float().cpu()

    def embed(self, ids: Sequence[Sequence[int]], prompt_length: int = 0) -> torch.Tensor:
        """Logits of one planned batch, one caller at a time; rows come back in input order.

        ``prompt_length`` is part of the queue's protocol and unused: a prompt is text here.
        On CUDA out-of-memory the batch is split in halves (and :attr:`memory_cap` set).

        Raises:
            DeviceOutOfMemoryError: one pair alone does not fit on the device.
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._check_process()
        with self._forward_lock:
            return self._splitting(ids)

    def _splitting(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        try:
            return self.logits(rows)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(rows) == 1:
                raise DeviceOutOfMemoryError(len(rows[0]), str(self.device)) from None
            cost = len(rows) * max(len(r) for r in rows)
            self.memory_cap = max(1, min(self.memory_cap or cost, cost) // 2)
            logger.warning("Out of memory: batches capped at %d padded tokens", self.memory_cap)
        half = len(rows) // 2
        return torch.cat([self._splitting(rows[:half]), self._splitting(rows[half:])])
