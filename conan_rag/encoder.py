"""Encoder: texts in, float32 vectors out; and ``load_encoder``, the per-process shared registry.

Example:
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> enc.encode(["a cat", "a dog"]).shape
    (2, 384)
    >>> enc is load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    True
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch

from conan_rag.backend import Backend
from conan_rag.batching import plan_batches
from conan_rag.config import EncoderConfig
from conan_rag.devices import resolve_device, resolve_dtype
from conan_rag.errors import ConanConfigError
from conan_rag.fingerprint import model_fingerprint
from conan_rag.model_files import canonical_model_id, read_model_spec, resolve_model

Kind = Literal["query", "document"]
KINDS: tuple[str, ...] = ("query", "document")
WINDOW = 8192  # texts tokenized and sorted together; bounds memory for huge inputs
# Through the queue, texts are tokenized and submitted in chunks: the worker embeds one while
# the caller tokenizes the next (its cycles, not the chunks, decide the length sorting).
QUEUE_CHUNK = 1024
ASYNC_TEXTS = 256  # aencode hands at most this many texts to the queue's worker to tokenize


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "encode() takes a list of strings, not a single string; wrap it: encode([text])."
        )
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{index}] is {type(text).__name__}, not str; convert or drop it "
                "(bytes: .decode('utf-8'))."
            )
    return items


class Encoder:
    """A sentence-transformers model run by plain torch + transformers.

    Build it with :func:`load_encoder`, which shares one instance per model, device and dtype.
    Texts longer than :attr:`max_seq_length` tokens (prompt included) are truncated.
    """

    def __init__(self, config: EncoderConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        spec = backend.spec
        self.spec = spec
        if config.max_seq_length and config.max_seq_length > spec.max_seq_length:
            raise ConanConfigError(
                f"max_seq_length {config.max_seq_length} exceeds the model's limit "
                f"{spec.max_seq_length}; pass a value <= {spec.max_seq_length} or None."
            )
        if config.truncate_dim and config.truncate_dim > spec.output_dim:
            raise ConanConfigError(
                f"truncate_dim {config.truncate_dim} exceeds the model's dimension "
                f"{spec.output_dim}; pass a value <= {spec.output_dim} or None."
            )
        self.max_seq_length: int = config.max_seq_length or spec.max_seq_length
        self.dim: int = config.truncate_dim or spec.output_dim
        self.model_id: str = config.model  # as loaded: hub id, or absolute folder
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
            f"dtype='{self.dtype}', max_seq_length={self.max_seq_length})"
        )

    @property
    def device(self) -> str:
        """The device the model runs on, e.g. ``"cpu"`` or ``"cuda"``."""
        return str(self.backend.device)

    @property
    def dtype(self) -> str:
        """The dtype the transformer computes in: ``float32``, ``bfloat16`` or ``float16``."""
        return self.backend.dtype_name

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
        items = [prompt + t for t in _check_texts(texts)]
        if self.spec.do_lower_case:
            items = [t.lower() for t in items]
        return items

    def _prompt(self, kind: str) -> str:
        if kind not in KINDS:
            raise ConanConfigError(f"Unknown kind {kind!r}; choose one of {list(KINDS)}.")
        return self.prompts[kind]

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed texts.

        Args:
            texts: the texts; ``""`` is embedded like sentence-transformers embeds it.
            kind: ``"query"`` or ``"document"``: which prompt to prepend.
            normalize: L2-normalize the vectors (then dot product = cosine similarity).
            show_progress: show a progress bar over texts.

        Returns:
            float32 array of shape ``(len(texts), dim)``, rows in input order.

        Raises:
            TypeError: an item is not a ``str`` (the message names its index).

        Example:
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> q = enc.encode(["capital of France"], kind="query")
            >>> d = enc.encode(["Paris is the capital of France.", "Bananas are yellow."])
            >>> bool((q @ d.T)[0, 0] > (q @ d.T)[0, 1])
            True
        """
        items = _check_texts(texts)
        prompt_length = self._prompt_lengths[kind] if kind in KINDS else 0
        self._prompt(kind)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        bar = None
        if show_progress and items:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="Embedding", unit="text")
        pending: list[tuple[int, Future[torch.Tensor]]] = []
        try:
            step = QUEUE_CHUNK if self.config.use_queue else WINDOW
            for start in range(0, len(items), step):
                window = items[start : start + step]
                ids = self.tokenize(window, kind=kind)
                if self.config.use_queue:  # the worker runs it while we tokenize the next window
                    future = self.backend.queue.submit(
                        ids,
                        prompt_length,
                        wait_ms=self.config.batch_wait_ms,
                        max_batch_size=self.config.max_batch_size,
                        progress=None if bar is None else bar.update,
                    )
                    pending.append((start, future))
                    if len(pending) > 1:
                        first, done = pending.pop(0)
                        out[first : first + step] = self._finish(done.result(), normalize)
                    continue
                batches = plan_batches(
                    [len(x) for x in ids], self.backend.token_budget, self.config.max_batch_size
                )
                with self.backend.forward_lock:
                    results = self.backend.embed_batches(ids, batches, prompt_length)
                for batch, vectors in results:
                    out[[start + i for i in batch]] = self._finish(vectors, normalize)
                    if bar is not None:
                        bar.update(len(batch))
            for first, done in pending:
                out[first : first + step] = self._finish(done.result(), normalize)
        finally:
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
            >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
            >>> asyncio.run(enc.aencode(["hi"])).shape
            (1, 384)
        """
        import asyncio

        items = self._prepare(texts, kind)  # checks types and kind before anything is queued
        if not self.config.use_queue or len(items) > ASYNC_TEXTS:
            return await asyncio.to_thread(
                self.encode, _check_texts(texts), kind=kind, normalize=normalize
            )
        future = self.backend.queue.submit_texts(
            items,
            self.max_seq_length,
            self._prompt_lengths[kind],
            wait_ms=self.config.batch_wait_ms,
            max_batch_size=self.config.max_batch_size,
        )
        return self._finish(await asyncio.wrap_future(future), normalize)

    def _finish(self, vectors: torch.Tensor, normalize: bool) -> np.ndarray:
        if self.spec.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        vectors = vectors[:, : self.dim]
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy()


_registry_lock = threading.Lock()
_backends: dict[tuple[str, str | None, str, str, str], Backend] = {}
_encoders: dict[tuple[Any, ...], Encoder] = {}


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
        config: a whole :class:`EncoderConfig`; ``model``/``device``/``dtype``/``settings``
            override its fields.
        **settings: other :class:`EncoderConfig` fields (``truncate_dim``, ``query_prompt``, ...).

    Returns:
        The same :class:`Encoder` for the same resolved model, revision, device, dtype and
        settings; encoders differing only in settings share one set of weights.

    Raises:
        ConanModelError: the model cannot be found or its folder is incomplete or corrupt.
        ConanConfigError: an unknown setting, device or dtype (the message lists valid ones).

    Example:
        >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", truncate_dim=128)
        >>> enc.dim
        128
    """
    base = config or EncoderConfig()
    changes: dict[str, Any] = dict(settings)
    if model is not None:
        changes["model"] = str(model)
    if config is None or device != "auto":
        changes["device"] = device
    if config is None or dtype != "auto":
        changes["dtype"] = dtype
    cfg = base.replace(**changes)
    folder = resolve_model(cfg.model, cfg.revision)
    resolved_device = resolve_device(cfg.device)
    resolved_dtype = resolve_dtype(cfg.dtype, resolved_device)
    # The CPU linear kernels (conan_rag.cpu_kernels) only apply to float32 on the CPU.
    cpu_fp32 = resolved_device == "cpu" and resolved_dtype == "float32"
    kernels = cfg.cpu_kernels if cpu_fp32 else "off"
    backend_key = (str(folder), cfg.revision, resolved_device, resolved_dtype, kernels)
    cfg = cfg.replace(model=canonical_model_id(folder))  # one spelling per model, loadable anywhere
    encoder_key = (
        *backend_key,
        *sorted(cfg.replace(model="", device="", dtype="").to_dict().items()),
    )
    with _registry_lock:
        encoder = _encoders.get(encoder_key)
        if encoder is not None:
            return encoder
        backend = _backends.get(backend_key)
        if backend is None:
            spec = read_model_spec(folder, model_id=cfg.model)
            backend = Backend(spec, resolved_device, resolved_dtype, cfg.token_budget, kernels)
            _backends[backend_key] = backend
        encoder = Encoder(cfg, backend)
        _encoders[encoder_key] = encoder
        return encoder


def loaded_backends() -> int:
    """How many distinct sets of weights this process has loaded (for tests and diagnostics)."""
    with _registry_lock:
        return len(_backends)


def clear_registry() -> None:
    """Forget every shared encoder (their memory is freed once no caller holds them)."""
    with _registry_lock:
        _encoders.clear()
        _backends.clear()
