"""The loaded cross-encoder: tokenizer and sequence-classification model on one device.

:class:`CrossEncoderRunner` implements the :class:`~conan_rag.batching.requests.BatchRunner`
protocol, so the same :class:`~conan_rag.batching.queue.BatchQueue` that batches embeddings
batches (query, passage) pairs: a row is one pair's token ids, already joined by the tokenizer
with its special tokens (``[CLS] q [SEP] p [SEP]``, ``<s> q </s></s> p </s>``), and the
"vectors" it returns are the pair's logits, ``(rows, num_labels)``.

Segment ids: BERT-style models need ``token_type_ids`` (0 for the query's segment, 1 for the
passage's); XLM-R does not take them. The queue treats rows as opaque (it reads only their
length) and hands the runner the very row objects it was given, so
:meth:`CrossEncoderRunner.tokenize_pairs` returns :class:`PairTokens` rows, the pair's token ids
with the tokenizer's own segment ids, which :meth:`CrossEncoderRunner.logits` pads next to the
ids.

Example:
    >>> import tempfile
    >>> from conan_rag.reranking.spec import read_cross_encoder_spec
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=100)
    >>> runner = CrossEncoderRunner(read_cross_encoder_spec(folder), "cpu", "float32")
    >>> rows = runner.tokenize_pairs(["a cat"], ["the dog"], runner.max_seq_length)
    >>> len(rows[0]), rows[0].type_ids
    (7, [0, 0, 0, 0, 1, 1, 1])
    >>> rows[0].ids == list(rows[0])
    True
    >>> runner.embed(rows).shape
    torch.Size([1, 1])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from conan_rag.errors import ConanModelError
from conan_rag.model.files import PYTORCH_BIN, SAFETENSORS
from conan_rag.reranking.spec import CrossEncoderSpec
from conan_rag.runtime.runner import ModelRunner, load_pretrained

__all__ = ["CrossEncoderRunner", "PairTokens"]


@dataclass(frozen=True, slots=True)
class PairTokens:
    """One tokenized pair (special tokens included): a batching-queue row of the reranker.

    Its length is its token count (what the queue budgets); iterating it gives the token ids.

    Attributes:
        ids: the token ids.
        type_ids: the segment ids (``None``: the model takes none).

    Example:
        >>> row = PairTokens([101, 7, 102, 8, 102], [0, 0, 0, 1, 1])
        >>> len(row), list(row), row.type_ids
        (5, [101, 7, 102, 8, 102], [0, 0, 0, 1, 1])
    """

    ids: list[int]
    type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)


def _load_model(spec: CrossEncoderSpec, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForSequenceClassification

    model, missing = load_pretrained(
        AutoModelForSequenceClassification,
        spec.model_path,
        dtype,
        "cross-encoder",
        weights_only=True,  # a .bin is read with torch.load(weights_only=True)
    )
    if missing:
        weights = SAFETENSORS if (spec.model_path / SAFETENSORS).is_file() else PYTORCH_BIN
        raise ConanModelError(
            f"The weights in {spec.model_path} lack {len(missing)} tensors the architecture "
            f"needs (e.g. {missing[:3]}); the file is incomplete or holds no trained "
            "classification head: re-download the model.",
            path=spec.model_path / weights,
        )
    return model  # a *ForSequenceClassification module


class CrossEncoderRunner(ModelRunner):
    """Tokenizer + ``*ForSequenceClassification`` model on one device: the scoring runner.

    Thread-safe and fork-aware as every :class:`~conan_rag.runtime.runner.ModelRunner`; its
    batches give float32 logits ``(rows, num_labels)``.

    Args:
        spec: the folder's spec.
        device: a resolved device (``"cpu"``, ``"cuda:0"``, ...).
        dtype: a resolved dtype name (a key of :data:`~conan_rag.runtime.devices.DTYPES`).
    """

    def __init__(self, spec: CrossEncoderSpec, device: str, dtype: str) -> None:
        super().__init__(spec.model_path, device, dtype)
        self.spec = spec
        self.model = _load_model(spec, self.dtype).to(self.device)
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

    @property
    def output_dim(self) -> int:
        """Logits per pair (the head's labels)."""
        return self.num_labels

    # -- tokenization -------------------------------------------------------------------------
    def tokenize_pairs(
        self, queries: Sequence[str], passages: Sequence[str], max_length: int
    ) -> list[PairTokens]:
        """One row per pair, truncated as sentence-transformers does (``"longest_first"``)."""
        return self._tokenize(list(queries), list(passages), max_length)

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[PairTokens]:
        """Rows for single texts (one segment), for the queue's text requests."""
        return self._tokenize(list(texts), None, max_length)

    def _tokenize(
        self, first: list[str], second: list[str] | None, max_length: int
    ) -> list[PairTokens]:
        if not first:
            return []
        encoded = self._encode(
            first,
            second,
            max_length,
            truncation="longest_first",
            token_types=self.wants_token_types,
        )
        types = encoded.get("token_type_ids") if self.wants_token_types else None
        return [
            PairTokens(list(ids), None if types is None else list(types[i]))
            for i, ids in enumerate(encoded["input_ids"])
        ]

    # -- forward ------------------------------------------------------------------------------
    def _inputs(self, rows: Sequence[PairTokens | Sequence[int]]) -> dict[str, torch.Tensor]:
        ids = [row.ids if isinstance(row, PairTokens) else row for row in rows]
        input_ids, mask = self._padded(ids)
        arrays = {"input_ids": input_ids, "attention_mask": mask}
        if self.wants_token_types:
            types = np.zeros_like(input_ids)
            for i, row in enumerate(rows):
                if isinstance(row, PairTokens) and row.type_ids is not None:
                    types[i, : len(row)] = row.type_ids
            arrays["token_type_ids"] = types
        if bool(mask.all()):
            del arrays["attention_mask"]  # no padding: let SDPA take its mask-free kernel
        return {k: self._on_device(v) for k, v in arrays.items()}

    @torch.inference_mode()
    def logits(self, rows: Sequence[PairTokens | Sequence[int]]) -> torch.Tensor:
        """Run one batch as given (no lock, no retry): float32 logits ``(rows, num_labels)``.

        A row of plain token ids has segment ids 0.

        Raises:
            ForkedProcessError: the model is on a GPU and this process was forked after loading.
        """
        self._ready()
        return self.model(**self._inputs(rows)).logits.float().cpu()

    def run_batch(self, rows: Sequence[Any], prompt_length: int = 0) -> torch.Tensor:
        """:meth:`logits` (``prompt_length`` is unused: a prompt is text here)."""
        return self.logits(rows)
