"""RemoteEncoder: the encoder of a ``conan-rag serve`` server, used like a local one.

Many processes (notebooks, a LangChain app, an ingestion job, several web workers) can share one
model on one GPU: the server runs the shared encoder and its batching queue, and each process
holds a :class:`RemoteEncoder`, which has the :class:`~conan_rag.protocols.EncoderLike` interface
the adapters and the pipeline use: query and document prompts (the server's), the same vectors as
the local encoder, a fingerprint for the collection guard, and the server's tokenizer for
chunking. It speaks the server's TEI-shaped ``POST /embed`` (which keeps ``normalize=False``
exact) and reads ``GET /info`` and ``GET /tokenizer`` once.

Example (with a server running)::

    enc = remote_encoder("http://127.0.0.1:8080", api_key="...")
    vectors = enc.encode(["Paris is the capital of France."])
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from conan_rag.config import DEFAULT_TOKEN_BUDGETS, EncoderConfig
from conan_rag.errors import ConanConfigError, ConanInputError, ServerError
from conan_rag.inputs import KINDS, Kind, check_texts
from conan_rag.model_views import Shared

API_KEY_ENV = "CONAN_RAG_API_KEY"
REQUEST_TEXTS = 256  # texts per request; the server coalesces concurrent requests itself
RETRIES = 5  # answers 429 / 503 are retried this often, waiting as Retry-After says
TIMEOUT_S = 300.0

_shared: dict[tuple[str, str | None, int | None], RemoteEncoder] = {}
_shared_lock = threading.Lock()


def remote_encoder(
    endpoint: str, *, api_key: str | None = None, truncate_dim: int | None = None
) -> RemoteEncoder:
    """The process's shared :class:`RemoteEncoder` for a server (like ``load_encoder``).

    Args:
        endpoint: the server's base URL, ``http(s)://HOST:PORT``.
        api_key: its API key; default ``$CONAN_RAG_API_KEY`` (none when unset).
        truncate_dim: keep the first N dimensions (then re-normalize); ``None`` keeps all.

    Raises:
        ServerError: no server answers, or it refuses the key.
        ConanConfigError: the URL is malformed, or ``truncate_dim`` exceeds the model's.
    """
    key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    ident = (endpoint.rstrip("/"), key, truncate_dim)
    with _shared_lock:
        encoder = _shared.get(ident)
        if encoder is None:
            encoder = _shared[ident] = RemoteEncoder(
                endpoint, api_key=key, truncate_dim=truncate_dim
            )
        return encoder


def _check_endpoint(endpoint: str) -> str:
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConanConfigError(
            f"endpoint {endpoint!r} is not of the form http://HOST:PORT or https://HOST:PORT.",
            setting="endpoint",
            value=endpoint,
        )
    if parsed.username or parsed.password:
        raise ConanConfigError(
            f"Do not put credentials in the endpoint URL; pass api_key= or set {API_KEY_ENV}.",
            setting="endpoint",
        )
    return endpoint.rstrip("/")


class ServerClient:
    """What every client of a ``conan-rag serve`` server shares (the encoder, a collection).

    Its URL and key, JSON requests retried while the server is busy (429/503, as
    ``Retry-After`` says), and errors that name the fix.

    Args:
        endpoint: the server's base URL.
        api_key: its API key (``None``: send none).
        timeout: seconds to wait for one request.
    """

    def __init__(self, endpoint: str, *, api_key: str | None, timeout: float = TIMEOUT_S) -> None:
        self.endpoint = _check_endpoint(endpoint)
        self.api_key = api_key
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.endpoint, headers=self._headers, timeout=timeout)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._answer(path, lambda: self._client.get(path, params=params))

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._answer(path, lambda: self._client.post(path, json=body))

    def _answer(self, path: str, send: Callable[[], httpx.Response]) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                response = send()
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            wait = self._retry_after(response, attempt)
            if wait is None:
                return self._decode(path, response)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _apost(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                response = await client.post(path, json=body)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            wait = self._retry_after(response, attempt)
            if wait is None:
                return self._decode(path, response)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _retry_after(response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying a busy answer (429/503); ``None``: do not retry."""
        if response.status_code not in (429, 503) or attempt >= RETRIES:
            return None
        try:
            return min(30.0, max(0.05, float(response.headers.get("Retry-After", "1"))))
        except ValueError:
            return 1.0

    def _unreachable(self, exc: Exception) -> ServerError:
        return ServerError(
            f"No conan-rag server answers at {self.endpoint} ({type(exc).__name__}); start one "
            "with `conan-rag serve --host HOST --port PORT` or fix the endpoint.",
            endpoint=self.endpoint,
        )

    def _decode(self, path: str, response: httpx.Response) -> Any:
        if response.status_code == 200:
            return response.json()
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        status = response.status_code
        if status == 401:
            raise ConanConfigError(
                f"The server at {self.endpoint} refused the API key ({message}); pass its key "
                f"as api_key= or set {API_KEY_ENV}.",
                setting="api_key",
            )
        if status in (400, 413):
            raise ConanInputError(f"The server at {self.endpoint} refused the request: {message}")
        raise ServerError(
            f"The server at {self.endpoint} answered {status} to {path}: {message}",
            endpoint=self.endpoint,
            status=status,
        )


class RemoteEncoder(ServerClient, Shared):
    """A ``conan-rag serve`` server's encoder; build it with :func:`remote_encoder`.

    Args:
        endpoint: the server's base URL.
        api_key: its API key (``None``: send none).
        truncate_dim: keep the first N dimensions (then re-normalize); ``None`` keeps all.
        timeout: seconds to wait for one request.
        request_texts: texts per HTTP request (capped by the server's ``max_inputs``).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        truncate_dim: int | None = None,
        timeout: float = TIMEOUT_S,
        request_texts: int = REQUEST_TEXTS,
    ) -> None:
        super().__init__(endpoint, api_key=api_key, timeout=timeout)
        self.truncate_dim = truncate_dim
        params = {"dimensions": truncate_dim} if truncate_dim else None
        info = self._get("/info", params)
        self.info: dict[str, Any] = info
        full = int(info["dim"])
        if truncate_dim is not None and not 0 < truncate_dim <= full:
            raise ConanConfigError(
                f"truncate_dim {truncate_dim} exceeds the server model's dimension {full}; "
                f"pass a value <= {full} or None.",
                setting="truncate_dim",
                value=truncate_dim,
            )
        self.model_id: str = str(info["model_id"])
        self.dim: int = truncate_dim or full
        self.max_seq_length: int = int(info["max_seq_length"])
        self.prompts: dict[str, str] = {k: str(info["prompts"].get(k, "")) for k in KINDS}
        self.token_budget: int = DEFAULT_TOKEN_BUDGETS["cpu"]  # rows per pipeline write group
        self.request_texts = max(1, min(request_texts, int(info["max_inputs"])))
        self._fingerprint = str(info["fingerprint"])
        self._tokenizer: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.endpoint, self.api_key, self.truncate_dim))

    def __repr__(self) -> str:
        return (
            f"RemoteEncoder(endpoint={self.endpoint!r}, model_id={self.model_id!r}, "
            f"dim={self.dim}, device='{self.device}', dtype='{self.dtype}')"
        )

    # -- what a collection records --------------------------------------------------------
    @property
    def config(self) -> EncoderConfig:
        """The server's model as a local encoder would load it (prompts: the model's own)."""
        return EncoderConfig(model=self.model_id, truncate_dim=self.truncate_dim)

    @property
    def fingerprint(self) -> str:
        """The server encoder's fingerprint (for ``truncate_dim``, of the truncated vectors)."""
        return self._fingerprint

    @property
    def device(self) -> str:
        """The device the server's model runs on."""
        return str(self.info.get("device", "?"))

    @property
    def dtype(self) -> str:
        """The dtype the server's model computes in."""
        return str(self.info.get("dtype", "?"))

    @property
    def do_lower_case(self) -> bool:
        """Whether the server lower-cases texts before tokenizing."""
        return bool(self.info.get("do_lower_case", False))

    @property
    def tokenizer(self) -> Any:
        """The server's fast tokenizer, fetched once (for chunking exactly as it tokenizes)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer
            from transformers import PreTrainedTokenizerFast

            data = self._get("/tokenizer")
            self._tokenizer = PreTrainedTokenizerFast(
                tokenizer_object=Tokenizer.from_str(data["tokenizer_json"]),
                model_max_length=int(data["max_seq_length"]),
            )
        return self._tokenizer

    # -- embedding ----------------------------------------------------------------------------
    def _body(self, texts: list[str], kind: str, normalize: bool) -> dict[str, Any]:
        if kind not in KINDS:
            raise ConanConfigError(
                f"Unknown kind {kind!r}; choose one of {list(KINDS)}.",
                setting="kind",
                value=kind,
                choices=KINDS,
            )
        return {
            "inputs": texts,
            "normalize": normalize,
            "truncate": True,
            "prompt_name": kind,
            "dimensions": self.truncate_dim,
        }

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        normalize: bool = True,
        show_progress: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts on the server: float32 ``(len(texts), dim)``, rows in input order.

        Raises:
            ConanTypeError: an item is not a ``str``.
            ConanInputError: the server refused the texts (its message says why).
            ServerError: the server did not answer, or failed.
        """
        items = check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        bar = None
        if show_progress and items:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="Embedding", unit="text")
        try:
            for start in range(0, len(items), self.request_texts):
                chunk = items[start : start + self.request_texts]
                answer = self._post("/embed", self._body(chunk, kind, normalize))
                out[start : start + len(chunk)] = np.asarray(answer, dtype=np.float32)
                for callback in (progress, None if bar is None else bar.update):
                    if callback is not None:
                        callback(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out

    async def aencode(
        self, texts: Sequence[str], *, kind: Kind = "document", normalize: bool = True
    ) -> np.ndarray:
        """Like :meth:`encode`, without blocking the event loop (requests run concurrently)."""
        items = check_texts(texts)
        chunks = [
            items[start : start + self.request_texts]
            for start in range(0, len(items), self.request_texts)
        ]
        bodies = [self._body(chunk, kind, normalize) for chunk in chunks]
        async with httpx.AsyncClient(
            base_url=self.endpoint, headers=self._headers, timeout=self.timeout
        ) as client:
            answers = await asyncio.gather(*(self._apost(client, "/embed", b) for b in bodies))
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(a, dtype=np.float32) for a in answers])


def _restore(endpoint: str, api_key: str | None, truncate_dim: int | None) -> RemoteEncoder:
    """Unpickle a :class:`RemoteEncoder`: this process's shared one for that server."""
    return remote_encoder(endpoint, api_key=api_key, truncate_dim=truncate_dim)
