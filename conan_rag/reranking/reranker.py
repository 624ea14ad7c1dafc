"""Reranker: (query, passage) pairs in, sentence-transformers ``CrossEncoder.predict`` scores out.

Build one with :func:`conan_rag.reranking.load_reranker`, which shares one instance per model,
device, dtype and settings. Pairs are tokenized as sentence-transformers does (truncated
``"longest_first"`` to the model's limit), sorted by length into token-budget batches by the
model's :class:`~conan_rag.batching.queue.BatchQueue`, and their logits go through the folder's
activation (:mod:`conan_rag.reranking.spec`).

Example:
    >>> import tempfile
    >>> from conan_rag.reranking import load_reranker
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=100)
    >>> reranker = load_reranker(str(folder), device="cpu")
    >>> reranker.score("a cat", ["the dog", "a cat sat"]).shape
    (2,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np
import torch

from conan_rag.batching.planning import plan_batches
from conan_rag.batching.queue import BatchQueue
from conan_rag.errors import ConanConfigError, ConanTypeError
from conan_rag.model_views import ModelView
from conan_rag.reranking.config import RerankerConfig
from conan_rag.reranking.runner import CrossEncoderRunner, PairTokens

QUEUE_CHUNK = 1024  # pairs tokenized and submitted together; the worker runs one meanwhile
ASYNC_PAIRS = 1024  # ascore tokenizes up to this many pairs in a thread, then awaits the queue

# What sentence-transformers applies to the logits, by spec.activation (softmax over labels).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
}


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    items = list(pairs)
    for index, pair in enumerate(items):
        if (
            isinstance(pair, (str, bytes))
            or len(pair) != 2
            or not all(isinstance(t, str) for t in pair)
        ):
            raise ConanTypeError(
                f"pairs[{index}] is {pair!r}, not a (query, passage) pair of strings.",
                index=index,
            )
    return [(q, p) for q, p in items]


def _pairs(query: str, passages: Sequence[str]) -> list[tuple[str, str]]:
    if not isinstance(query, str):
        raise ConanTypeError(f"query is {type(query).__name__}, not str.")
    if isinstance(passages, (str, bytes)):
        raise ConanTypeError("passages must be a list of strings, not a single string.")
    for index, passage in enumerate(passages):
        if not isinstance(passage, str):
            raise ConanTypeError(
                f"passages[{index}] is {type(passage).__name__}, not str.", index=index
            )
    return [(query, p) for p in passages]


class Reranker(ModelView[CrossEncoderRunner, RerankerConfig]):
    """A sentence-transformers ``CrossEncoder`` folder run by plain torch + transformers.

    Build it with :func:`conan_rag.reranking.load_reranker`. Scores equal
    ``CrossEncoder(folder).predict(pairs)``: the folder's activation (sigmoid for single-label
    models unless the folder records another) applied to the logits; ``(n,)`` for one label,
    ``(n, num_labels)`` otherwise.

    Args:
        config: the settings (``model`` is the canonical id of the loaded folder).
        runner: the loaded model, possibly shared with other rerankers.
        queue: the batching queue of ``runner`` (shared likewise).
    """

    def __init__(
        self,
        config: RerankerConfig,
        runner: CrossEncoderRunner,
        queue: BatchQueue[PairTokens],
    ) -> None:
        super().__init__(config, runner, queue)
        self.spec = runner.spec
        self._check_at_most("max_length", config.max_length, runner.max_seq_length, "limit")
        self.max_length: int = config.max_length or runner.max_seq_length
        self.num_labels: int = runner.num_labels
        self.activation: str = self.spec.activation

    def __repr__(self) -> str:
        return (
            f"Reranker(model_id={self.model_id!r}, num_labels={self.num_labels}, "
            f"activation={self.activation!r}, device='{self.device}', dtype='{self.dtype}', "
            f"max_length={self.max_length}, token_budget={self.token_budget})"
        )

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[PairTokens]:
        """Rows exactly as the model sees them (prompt, lower-casing and truncation applied)."""
        items = _check_pairs(pairs)
        queries = [self.spec.prompt + q for q, _ in items]
        passages = [p for _, p in items]
        if self.spec.do_lower_case:
            queries = [q.lower() for q in queries]
            passages = [p.lower() for p in passages]
        return self.runner.tokenize_pairs(queries, passages, self.max_length)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Score (query, passage) pairs, like ``CrossEncoder.predict(pairs)``.

        Returns:
            float32 scores: ``(len(pairs),)`` for one label, else ``(len(pairs), num_labels)``.

        Raises:
            ConanTypeError: an item is not a pair of strings (the message names its index).
        """
        items = _check_pairs(pairs)
        if not self.config.use_queue:
            return self._finish(self._direct(self.tokenize(items)))
        pending: list[Future[torch.Tensor]] = []
        try:
            for start in range(0, len(items), QUEUE_CHUNK):
                rows = self.tokenize(items[start : start + QUEUE_CHUNK])
                pending.append(self._submit(rows))  # runs while the next chunk is tokenized
            logits = [self.queue.result(future) for future in pending]
        finally:
            for future in pending:  # interrupted (Ctrl-C, error): drop what is not yet run
                future.cancel()
        return self._finish(torch.cat(logits) if logits else self._empty())

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Score each passage against ``query`` (see :meth:`score_pairs`).

        Example:
            >>> import tempfile
            >>> from conan_rag.reranking import load_reranker
            >>> from conan_rag.testing import build_cross_encoder
            >>> reranker = load_reranker(build_cross_encoder(tempfile.mkdtemp(), n_cjk=9))
            >>> scores = reranker.score("cat", ["a cat", "a dog"])
            >>> scores.dtype, bool(((0 < scores) & (scores < 1)).all())  # sigmoid
            (dtype('float32'), True)
        """
        return self.score_pairs(_pairs(query, passages))

    def rank(
        self, query: str, passages: Sequence[str], top_k: int | None = None
    ) -> list[tuple[int, float]]:
        """Passages by decreasing score (ties keep input order), as ``(index, score)``.

        Raises:
            ConanConfigError: the model has several labels (no single score to rank by).

        Example:
            >>> import tempfile
            >>> from conan_rag.reranking import load_reranker
            >>> from conan_rag.testing import build_cross_encoder
            >>> reranker = load_reranker(build_cross_encoder(tempfile.mkdtemp(), n_cjk=9))
            >>> ranked = reranker.rank("cat", ["a dog", "a cat", "a cow"], top_k=2)
            >>> len(ranked), ranked[0][1] >= ranked[1][1]
            (2, True)
        """
        return self._ranked(self.score(query, passages), top_k)

    async def ascore(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Like :meth:`score`, awaited without blocking the event loop.

        Pairs are tokenized in a worker thread, then scored by the batching queue, where
        concurrent callers share batches.

        Example:
            >>> import asyncio, tempfile
            >>> from conan_rag.reranking import load_reranker
            >>> from conan_rag.testing import build_cross_encoder
            >>> reranker = load_reranker(build_cross_encoder(tempfile.mkdtemp(), n_cjk=9))
            >>> asyncio.run(reranker.ascore("cat", ["a cat"])).shape
            (1,)
        """
        import asyncio

        items = _pairs(query, passages)
        if not self.config.use_queue or len(items) > ASYNC_PAIRS:
            return await asyncio.to_thread(self.score_pairs, items)
        rows = await asyncio.to_thread(self.tokenize, items)
        return self._finish(await self.queue.aresult(self._submit(rows)))

    async def arank(
        self, query: str, passages: Sequence[str], top_k: int | None = None
    ) -> list[tuple[int, float]]:
        """Like :meth:`rank`, awaited without blocking the event loop."""
        return self._ranked(await self.ascore(query, passages), top_k)

    # -- internals ----------------------------------------------------------------------------
    def _submit(self, rows: list[PairTokens]) -> Future[torch.Tensor]:
        return self.queue.submit(
            list(rows),
            wait_ms=self.config.batch_wait_ms,
            max_batch_size=self.config.max_batch_size,
            token_budget=self.token_budget,
        )

    def _direct(self, rows: list[PairTokens]) -> torch.Tensor:
        out = self._empty(len(rows))
        budget = self.runner.budget(self.token_budget)
        for batch in plan_batches([len(r) for r in rows], budget, self.config.max_batch_size):
            out[batch] = self.runner.embed([rows[i] for i in batch])
        return out

    def _empty(self, rows: int = 0) -> torch.Tensor:
        return torch.zeros((rows, self.num_labels), dtype=torch.float32)

    def _finish(self, logits: torch.Tensor) -> np.ndarray:
        scores = ACTIVATIONS[self.activation](logits.float())
        if self.num_labels == 1:
            scores = scores[:, 0]
        return scores.numpy().astype(np.float32, copy=False)

    def _ranked(self, scores: np.ndarray, top_k: int | None) -> list[tuple[int, float]]:
        if self.num_labels != 1:
            raise ConanConfigError(
                f"rank() needs a single-label model; {self.model_id} has {self.num_labels} "
                "labels: use score() and pick the label to sort by.",
                setting="model",
                value=self.model_id,
            )
        if top_k is not None and (isinstance(top_k, bool) or top_k < 0):
            raise ConanConfigError(
                f"top_k must be a non-negative integer or None, not {top_k!r}.",
                setting="top_k",
                value=top_k,
            )
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [(int(i), float(scores[i])) for i in order]
