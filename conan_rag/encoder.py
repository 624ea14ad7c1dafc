"""Encoder: texts in, float32 vectors out (prompts, truncation, normalization, batching).

Build one with :func:`conan_rag.load_encoder` (:mod:`conan_rag.registry`), which shares one
instance per model, device, dtype and settings.

Example:
    >>> from conan_rag import load_encoder
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> enc.encode(["a cat", "a dog"]).shape
    (2, 384)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import cached_property
from typing import Any

import numpy as np
import torch

from conan_rag.batching.planning import plan_batches
from conan_rag.batching.queue import BatchQueue
from conan_rag.config import EncoderConfig
from conan_rag.errors import ConanConfigError
from conan_rag.inputs import KINDS, Kind, check_texts
from conan_rag.model.fingerprint import model_fingerprint
from conan_rag.model_views import ModelView
from conan_rag.runtime.backend import Backend

WINDOW = 8192  # texts tokenized and sorted together; bounds memory for huge inputs
# Through the queue, texts are tokenized and submitted in chunks: the worker embeds one while
# the caller tokenizes the next (its cycles, not the chunks, decide the length sorting).
QUEUE_CHUNK = 1024
ASYNC_TEXTS = 256  # aencode hands at most this many texts to the queue's worker to tokenize


class Encoder(ModelView[Backend, EncoderConfig]):
    """A sentence-transformers model run by plain torch + transformers.

    Build it with :func:`conan_rag.load_encoder`, which shares one instance per model, device,
    dtype and settings. It pickles by its settings (``config``): unpickled in another process it
    becomes that process's shared encoder; ``copy``/``deepcopy`` return it unchanged. Texts
    longer than :attr:`max_seq_length` tokens (prompt included) are truncated.

    Args:
        config: the settings (``model`` is the canonical id of the loaded folder).
        backend: the loaded weights, possibly shared with other encoders.
        queue: the batching queue of ``backend`` (shared likewise).
    """

    def __init__(
        self, config: EncoderConfig, backend: Backend, queue: BatchQueue[list[int]]
    ) -> None:
        super().__init__(config, backend, queue)
        self.backend = backend  # the encoder's name for its runner
        spec = backend.spec
        self.spec = spec
        self._check_at_most("max_seq_length", config.max_seq_length, spec.max_seq_length, "limit")
        self._check_at_most("truncate_dim", config.truncate_dim, spec.output_dim, "dimension")
        self.max_seq_length: int = config.max_seq_length or spec.max_seq_length
        self.dim: int = config.truncate_dim or spec.output_dim
        self.prompts: dict[str, str] = {
            "query": spec.prompts.get("query", "")
            if config.query_prompt is None
            else config.query_prompt,
            "document": spec.prompts.get("document", spec.prompts.get("passage", ""))
            if config.document_prompt is None
            else config.document_prompt,
        }
        self._prompt_lengths = {
            k: backend.prompt_length(p) if p else 0 for k, p in self.prompts.items()
        }

    def __repr__(self) -> str:
        return (
            f"Encoder(model_id={self.model_id!r}, dim={self.dim}, device='{self.device}', "
            f"dtype='{self.dtype}', max_seq_length={self.max_seq_length}, "
            f"token_budget={self.token_budget}, forward={self.forward!r})"
        )

    @property
    def forward(self) -> str:
        """How the transformer runs here, and why: ``"eager (...)"`` or ``"inductor (...)"``.

        See :mod:`conan_rag.runtime.compiled` and :attr:`EncoderConfig.compile
        <conan_rag.config.EncoderConfig>`.
        """
        if self.backend.forward_mode == "varlen":
            return "varlen (unpadded CUDA)"
        return self.backend.compile_report.summary()

    def info(self) -> dict[str, Any]:
        """Model, device, dtype and the runtime's decisions (CPU kernel, compiled forward).

        Example:
            >>> from conan_rag import load_encoder
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> sorted(enc.info()["compile"])[:3]
            ['cache', 'choice', 'entry']
        """
        report = self.backend.compile_report
        return {
            "model": self.model_id,
            "dim": self.dim,
            "device": self.device,
            "dtype": self.dtype,
            "max_seq_length": self.max_seq_length,
            "token_budget": self.token_budget,
            "cpu_kernel": self.backend.cpu_kernel,
            "forward": self.forward,
            "compile": dataclasses.asdict(report),
        }

    def warm_up(self) -> str:
        """Build (once per machine) and load the compiled CPU forward; returns :attr:`forward`.

        Later processes with ``compile="auto"`` (the default) load the cached package in about
        a second. A no-op off the CPU. Encodes wait while it compiles (tens of seconds).
        """
        if self.backend.device.type == "cpu" and self.config.compile != "off":
            self.backend.use_compiled("inductor")
        return self.forward

    @property
    def tokenizer(self) -> Any:
        """The model's (fast, Hugging Face) tokenizer; not re-entrant: copy it to use it."""
        return self.backend.tokenizer

    @property
    def do_lower_case(self) -> bool:
        """Whether texts are lower-cased before tokenizing (the model folder says so)."""
        return bool(self.spec.do_lower_case)

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the model files and every setting that changes the vectors.

        Device and dtype are not part of it: vectors from a GPU in bf16 and a CPU in float32 are
        interchangeable.
        """
        spec = self.spec
        settings: dict[str, Any] = {
            "pooling": [spec.pooling.mode, spec.pooling.include_prompt],
            "dense": [[d.in_features, d.out_features, d.bias, d.activation] for d in spec.dense],
            "normalize": True,
            "max_seq_length": self.max_seq_length,
            "do_lower_case": spec.do_lower_case,
            "prompts": self.prompts,
            "dim": self.dim,
        }
        return model_fingerprint(spec.path, [d.path for d in spec.dense], settings)

    def tokenize(self, texts: Sequence[str], *, kind: Kind = "document") -> list[list[int]]:
        """Token ids exactly as :meth:`encode` feeds them to the model (prompt included)."""
        return self.backend.tokenize(self._prepare(texts, kind), self.max_seq_length)

    def _prepare(self, texts: Sequence[str], kind: str) -> list[str]:
        """The strings the tokenizer sees: prompt prepended, lower-cased if the model asks."""
        prompt = self._prompt(kind)
        items = [prompt + t for t in check_texts(texts)]
        if self.spec.do_lower_case:
            items = [t.lower() for t in items]
        return items

    def _prompt(self, kind: str) -> str:
        if kind not in KINDS:
            raise ConanConfigError(
                f"Unknown kind {kind!r}; choose one of {list(KINDS)}.",
                setting="kind",
                value=kind,
                choices=KINDS,
            )
        return self.prompts[kind]

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        normalize: bool = True,
        show_progress: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts.

        Args:
            texts: the texts; ``""`` is embedded like sentence-transformers embeds it.
            kind: ``"query"`` or ``"document"``: which prompt to prepend.
            normalize: L2-normalize the vectors (then dot product = cosine similarity).
            show_progress: show a progress bar over texts.
            progress: called with the number of texts finished after every batch the model
                runs (from the thread running it).

        Returns:
            float32 array of shape ``(len(texts), dim)``, rows in input order.

        Raises:
            ConanTypeError: an item is not a ``str`` (the message names its index).

        Example:
            >>> from conan_rag import load_encoder
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> q = enc.encode(["capital of France"], kind="query")
            >>> d = enc.encode(["Paris is the capital of France.", "Bananas are yellow."])
            >>> bool((q @ d.T)[0, 0] > (q @ d.T)[0, 1])
            True
        """
        items = check_texts(texts)
        self._prompt(kind)
        prompt_length = self._prompt_lengths[kind]
        out = np.empty((len(items), self.dim), dtype=np.float32)
        bar = None
        if show_progress and items:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="Embedding", unit="text")
        callbacks = [c for c in (progress, None if bar is None else bar.update) if c is not None]

        def report(rows: int) -> None:
            for callback in callbacks:
                callback(rows)

        pending: list[tuple[int, Future[torch.Tensor]]] = []
        try:
            step = QUEUE_CHUNK if self.config.use_queue else WINDOW
            for start in range(0, len(items), step):
                ids = self.tokenize(items[start : start + step], kind=kind)
                if self.config.use_queue:  # the worker runs it while we tokenize the next window
                    future = self._submit(ids, prompt_length, report if callbacks else None)
                    pending.append((start, future))
                    if len(pending) > 1:
                        first, done = pending.pop(0)
                        out[first : first + step] = self._finish(self.queue.result(done), normalize)
                    continue
                part = self._embed_unqueued(ids, prompt_length, normalize, report)
                out[start : start + len(ids)] = part
            while pending:
                first, done = pending.pop(0)
                out[first : first + step] = self._finish(self.queue.result(done), normalize)
        finally:
            for _, future in pending:  # interrupted (Ctrl-C, error): drop what is not yet run
                future.cancel()
            if bar is not None:
                bar.close()
        return out

    async def aencode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        normalize: bool = True,
    ) -> np.ndarray:
        """Like :meth:`encode`, awaited without blocking the event loop.

        Up to 256 texts go to the batching queue as text; its worker tokenizes every waiting
        async request in one call, so the event loop neither tokenizes nor waits for the
        tokenizer lock, and no thread is started per call. Larger inputs run :meth:`encode` in
        a worker thread.

        Example:
            >>> import asyncio
            >>> from conan_rag import load_encoder
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> asyncio.run(enc.aencode(["hi"])).shape
            (1, 384)
        """
        import asyncio

        items = self._prepare(texts, kind)  # checks types and kind before anything is queued
        if not self.config.use_queue or len(items) > ASYNC_TEXTS:
            return await asyncio.to_thread(
                self.encode, check_texts(texts), kind=kind, normalize=normalize
            )
        future = self.queue.submit_texts(
            items,
            self.max_seq_length,
            self._prompt_lengths[kind],
            wait_ms=self.config.batch_wait_ms,
            max_batch_size=self.config.max_batch_size,
            token_budget=self.token_budget,
        )
        return self._finish(await self.queue.aresult(future), normalize)

    async def aencode_ids(
        self,
        ids: Sequence[Sequence[int]],
        *,
        kind: Kind = "document",
        normalize: bool = True,
    ) -> np.ndarray:
        """Like :meth:`aencode`, for token ids from :meth:`tokenize` with the same ``kind``.

        For callers that tokenized already (a server counting tokens for admission and usage):
        the texts are not tokenized a second time.

        Example:
            >>> import asyncio
            >>> from conan_rag import load_encoder
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> ids = enc.tokenize(["hi"], kind="query")
            >>> got = asyncio.run(enc.aencode_ids(ids, kind="query"))
            >>> bool(abs(got - enc.encode(["hi"], kind="query")).max() < 1e-5)
            True
        """
        import asyncio

        self._prompt(kind)  # checks the kind
        prompt_length = self._prompt_lengths[kind]
        rows = [list(x) for x in ids]
        if not self.config.use_queue:
            return await asyncio.to_thread(self._embed_unqueued, rows, prompt_length, normalize)
        future = self._submit(rows, prompt_length)
        return self._finish(await self.queue.aresult(future), normalize)

    def _submit(
        self,
        ids: list[list[int]],
        prompt_length: int,
        progress: Callable[[int], None] | None = None,
    ) -> Future[torch.Tensor]:
        """Queue token ids with this encoder's batching settings."""
        return self.queue.submit(
            ids,
            prompt_length,
            wait_ms=self.config.batch_wait_ms,
            max_batch_size=self.config.max_batch_size,
            token_budget=self.token_budget,
            progress=progress,
        )

    def _embed_unqueued(
        self,
        ids: list[list[int]],
        prompt_length: int,
        normalize: bool,
        report: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Vectors of ``ids`` in planned batches on this thread (no batching queue)."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        budget = self.backend.budget(self.token_budget)
        for batch in plan_batches([len(x) for x in ids], budget, self.config.max_batch_size):
            vectors = self.backend.embed([ids[i] for i in batch], prompt_length)
            out[batch] = self._finish(vectors, normalize)
            if report is not None:
                report(len(batch))
        return out

    def _finish(self, vectors: torch.Tensor, normalize: bool) -> np.ndarray:
        if self.spec.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        vectors = vectors[:, : self.dim]
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy()
