"""``create_app``: the FastAPI app serving one shared encoder in OpenAI's and TEI's shapes.

Endpoints (the HTTP contract): ``POST /v1/embeddings`` and ``/embeddings`` (OpenAI),
``POST /embed`` (TEI), ``GET /v1/models``, ``/health``, ``/info``, ``/tokenizer``, ``/metrics``.
Every request is handled on the event loop without a lock: short texts are counted there, then
awaited through the encoder's batching queue, which coalesces all clients' texts into batches.
Bodies over ``max_request_bytes`` are refused (413) before they are read; texts far over the
model's limit are cut by characters before they are tokenized (their tokens unchanged); a large
request is served in slices (:mod:`conan_rag.server.slices`). On SIGTERM, requests still running
at the drain limit are answered 503 (:meth:`ServerState.cut_requests`).

Example:
    >>> import httpx, asyncio
    >>> app = create_app(ServerSettings(api_key=None))  # no encoder and no lifespan: not ready
    >>> async def health() -> int:
    ...     transport = httpx.ASGITransport(app=app)
    ...     async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
    ...         return (await client.get("/health")).status_code
    >>> asyncio.run(health())
    503
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import numpy as np
import orjson

from conan_rag.server.settings import ServerSettings, missing_extra

try:
    from fastapi import FastAPI, Response
    from prometheus_client import CONTENT_TYPE_LATEST
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(missing_extra(exc)) from exc

import conan_rag
from conan_rag.encoder import Encoder
from conan_rag.inputs import Kind
from conan_rag.server.admission import Admission
from conan_rag.server.auth import ApiKeyMiddleware
from conan_rag.server.body_size import BodySizeMiddleware
from conan_rag.server.errors import ApiError
from conan_rag.server.memory_trim import TrimMiddleware
from conan_rag.server.metrics import Metrics, MetricsMiddleware
from conan_rag.server.page import add_page_routes
from conan_rag.server.responses import install_error_handlers, openai_body, vectors_json
from conan_rag.server.retrieval import (
    Retriever,
    RetrieveRequest,
    hits_json,
    load_served,
    options_of,
)
from conan_rag.server.schemas import EmbeddingsRequest, EmbedRequest, texts_of
from conan_rag.server.service import EmbeddingService
from conan_rag.server.slices import embed_in_slices

logger = logging.getLogger(__name__)
JSON = "application/json"
BIG_RESPONSE = 200_000  # numbers in a response above which it is written in a worker thread
_SEEN_MODELS_LOGGED = 64  # model names logged once each, at most this many


class ServerState:
    """What the endpoints share: settings, metrics and, once loaded, the encoder's service."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.service: EmbeddingService | None = None
        self.retriever: Retriever | None = None  # with --collection, once it is open
        self.admission: Admission | None = None
        self.load_error: str | None = None
        self._other_models: set[str] = set()
        self._answering: set[asyncio.Task[Any]] = set()  # requests counting or embedding now
        self.cutting = False  # the drain limit has passed: cancelled requests are answered 503
        self.cut = 0  # requests answered 503 at the drain limit

    def ready(self, encoder: Encoder) -> None:
        """Serve ``encoder`` from now on."""
        service = EmbeddingService(encoder)
        admission = Admission(self.settings.queued_token_limit(encoder.token_budget))
        self.metrics.watch_queue(lambda: admission.tokens, lambda: admission.requests)
        labels = (encoder.model_id, encoder.dim, encoder.dtype, encoder.device)
        self.metrics.model.labels(*labels).set(1)
        self.service, self.admission = service, admission

    def open(self) -> None:
        """Start reporting the shared queue's batches (while the app runs)."""
        if self.service is not None:
            self.service.encoder.queue.batch_observers.append(self.metrics.observe_batch)

    async def load(self) -> None:
        """Load the encoder (and open the collection) in a worker thread; 503 meanwhile."""
        try:
            encoder, retriever = await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 - reported by /health and every endpoint
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.error("Loading the model failed: %s", self.load_error)
            return
        self.retriever = retriever
        if self.service is None:
            self.ready(encoder)
            self.open()

    def _load(self) -> tuple[Encoder, Retriever | None]:
        """The encoder (given, named, or the collection's recorded one) and the retriever."""
        return load_served(self.settings, self.service.encoder if self.service else None)

    def close(self) -> None:
        """Stop reporting the queue's batches (the shared encoder itself stays loaded)."""
        if self.service is not None:
            observers = self.service.encoder.queue.batch_observers
            if self.metrics.observe_batch in observers:
                observers.remove(self.metrics.observe_batch)

    def require(self) -> tuple[EmbeddingService, Admission]:
        """The service, or the 503 saying why there is none yet."""
        opening = self.settings.collection is not None and self.retriever is None
        if self.service is None or self.admission is None or opening:
            why = f"loading the model failed: {self.load_error}" if self.load_error else None
            raise ApiError(503, f"The model is not loaded ({why or 'still loading; retry'}).")
        return self.service, self.admission

    def check_model(self, asked: str | None) -> None:
        """Serve a request naming another model (logged once per name), or 404 when strict."""
        service, _ = self.require()
        names = {service.model_id, service.model_id.rsplit("/", 1)[-1], self.settings.model}
        if not asked or asked in names:
            return
        if self.settings.strict_model:
            raise ApiError(
                404,
                f"The model {asked!r} is not served here; this server serves {service.model_id!r}.",
                param="model",
                code="model_not_found",
            )
        if asked not in self._other_models and len(self._other_models) < _SEEN_MODELS_LOGGED:
            self._other_models.add(asked)
            logger.warning("A request asked for model %r; serving %s.", asked, service.model_id)

    async def vectors(
        self,
        endpoint: str,
        texts: list[str],
        kind: Kind,
        *,
        dimensions: int | None,
        normalize: bool = True,
        truncate: bool = True,
    ) -> tuple[np.ndarray, int]:
        """Count, admit and embed one request's texts: (vectors, tokens).

        Raises:
            ApiError: 400/413/429 refusing the request; 503 when the drain limit cut it.
        """
        service, admission = self.require()
        service.check_dimensions(dimensions)
        task = asyncio.current_task()
        assert task is not None
        self._answering.add(task)
        try:
            rows = await service.arows(texts, kind)  # the only tokenization
            if not truncate:
                service.check_length(rows, "inputs", kind)
            each = [len(x) for x in rows.ids]
            vectors = await embed_in_slices(
                service, admission, rows.ids, kind, dimensions=dimensions, normalize=normalize
            )
        except asyncio.CancelledError:
            if not self.cutting:
                raise
            task.uncancel()
            self.cut += 1
            raise ApiError(
                503,
                "The server is stopping and this request was still running at its drain limit "
                f"({self.settings.drain_s:g} s); it was not answered. Retry it on another server "
                "or once this one is back.",
                code="server_stopping",
            ) from None
        finally:
            self._answering.discard(task)
        self.metrics.count_inputs(endpoint, texts=len(texts), tokens=sum(each))
        return vectors, sum(each)

    def cut_requests(self) -> int:
        """At the drain limit: answer 503 to every request still counting or embedding.

        Returns:
            How many requests are cut (their embedding is cancelled: the queue drops its rows).
        """
        self.cutting = True
        for task in self._answering:
            task.cancel()
        return len(self._answering)


async def _off_loop(size: int, build: Callable[..., bytes], *args: Any) -> bytes:
    """``build(*args)``, in a worker thread when the response holds many numbers."""
    if size > BIG_RESPONSE:
        return await asyncio.to_thread(build, *args)
    return build(*args)


def create_app(
    settings: ServerSettings,
    encoder: Encoder | None = None,
    *,
    retriever: Retriever | None = None,
) -> FastAPI:
    """The server's ASGI app.

    Args:
        settings: limits, key and model (the model is loaded from them when ``encoder`` is
            None: in a worker thread at startup, the app answering 503 until it is ready).
        encoder: an encoder already loaded (from :func:`conan_rag.load_encoder`) to serve.
        retriever: ``settings.collection`` already opened with ``encoder`` (else it is opened
            at startup, like the model).

    Returns:
        A FastAPI app; run it with uvicorn (:func:`conan_rag.server.serve` does).
    """
    state = ServerState(settings)
    state.retriever = retriever
    if encoder is not None:
        state.ready(encoder)
    app = FastAPI(
        title="conan-rag",
        version=conan_rag.__version__,
        lifespan=_lifespan(state),
        docs_url=None,  # every endpoint but /health and /metrics is behind the key
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = state
    install_error_handlers(app)
    app.add_middleware(BodySizeMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(TrimMiddleware)  # memory back once idle after a large request
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)  # before the body is read
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: sees the 401s
    _add_status_routes(app, state)
    _add_embedding_routes(app, state)
    _add_retrieval_routes(app, state)
    add_page_routes(app)
    return app


def _lifespan(state: ServerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: report batches while it runs, and load the encoder if none was given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open()
        unopened = state.settings.collection is not None and state.retriever is None
        loading = None
        if state.service is None or unopened:
            loading = asyncio.create_task(state.load())
        try:
            yield
        finally:
            if loading is not None:
                loading.cancel()
            state.close()

    return lifespan


def _add_status_routes(app: FastAPI, state: ServerState) -> None:
    """``/health``, ``/metrics``, ``/info``, ``/tokenizer`` and ``/v1/models``."""
    settings = state.settings

    @app.get("/health")
    async def health() -> dict[str, str]:
        state.require()
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/info")
    async def info(dimensions: int | None = None) -> dict[str, Any]:
        service, admission = state.require()
        if dimensions is None:
            return service.info(settings.max_inputs, admission.max_tokens)
        # a truncated view's fingerprint hashes the model files (once): off the event loop
        return await asyncio.to_thread(
            service.info, settings.max_inputs, admission.max_tokens, dimensions
        )

    @app.get("/tokenizer")
    async def tokenizer() -> Response:
        service, _ = state.require()
        return Response(service.tokenizer_body(), media_type=JSON)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        service, _ = state.require()
        model = {"id": service.model_id, "object": "model", "created": 0, "owned_by": "conan-rag"}
        return {"object": "list", "data": [model]}


def _add_embedding_routes(app: FastAPI, state: ServerState) -> None:
    """OpenAI's ``/v1/embeddings`` and ``/embeddings``, and TEI's ``/embed``."""
    settings = state.settings

    async def openai_embeddings(body: EmbeddingsRequest, endpoint: str) -> Response:
        state.check_model(body.model)
        texts = texts_of(body.input, "input", max_inputs=settings.max_inputs)
        kind: Kind = body.input_type or "document"
        vectors, tokens = await state.vectors(endpoint, texts, kind, dimensions=body.dimensions)
        model = state.require()[0].model_id
        content = await _off_loop(
            vectors.size, openai_body, vectors, model, tokens, body.encoding_format
        )
        return Response(content, media_type=JSON)

    @app.post("/v1/embeddings")
    async def embeddings_v1(body: EmbeddingsRequest) -> Response:
        return await openai_embeddings(body, "/v1/embeddings")

    @app.post("/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> Response:
        return await openai_embeddings(body, "/embeddings")

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> Response:
        texts = texts_of(body.inputs, "inputs", max_inputs=settings.max_inputs)
        if body.truncation_direction.lower() != "right":
            raise ApiError(
                400,
                "truncation_direction 'left' is not supported: texts over max_seq_length keep "
                "their first tokens (send 'right').",
                param="truncation_direction",
            )
        kind: Kind = body.prompt_name or "document"
        vectors, _ = await state.vectors(
            "/embed",
            texts,
            kind,
            dimensions=body.dimensions,
            normalize=body.normalize,
            truncate=body.truncate,
        )
        return Response(await _off_loop(vectors.size, vectors_json, vectors), media_type=JSON)


def _add_retrieval_routes(app: FastAPI, state: ServerState) -> None:
    """``POST /v1/retrieve`` and ``GET /v1/collections`` (:mod:`conan_rag.server.retrieval`)."""
    settings = state.settings

    def retriever() -> Retriever:
        state.require()
        if state.retriever is None:
            raise ApiError(
                404,
                "This server serves no collection; start it with `conan-rag serve --collection "
                "NAME` (and --db DIR or --chroma-url URL) to search one.",
                code="no_collection",
            )
        return state.retriever

    @app.get("/v1/collections")
    async def collections() -> Response:
        served = retriever()
        entry = await asyncio.to_thread(served.describe)
        return Response(orjson.dumps({"object": "list", "data": [entry]}), media_type=JSON)

    @app.post("/v1/retrieve")
    async def retrieve(body: RetrieveRequest) -> Response:
        served = retriever()
        queries = texts_of(body.query, "query", max_inputs=settings.max_inputs)
        options = options_of(body, settings.max_k)
        found = await served.retrieve(queries, options)
        data = [{"query": q, "hits": hits_json(hits)} for q, hits in zip(queries, found)]
        content = {"object": "list", "collection": served.name, "data": data}
        return Response(orjson.dumps(content), media_type=JSON)
