"""Retrieval over HTTP: ``POST /v1/retrieve`` and ``GET /v1/collections`` for one collection.

``conan-rag serve --collection NAME [--db DIR | --chroma-url URL]`` opens a
:class:`~conan_rag.rag.pipeline.Pipeline` over the collection with the served encoder (the
collection's recorded model when no ``--model`` is given). A search runs
:meth:`~conan_rag.rag.pipeline.Pipeline.retrieve_many` in a worker thread: its query vectors
go through the shared batching queue, so concurrent searches share batches with each other and
with the embedding routes, and the lexical index stays loaded between searches (synced when
the collection changed). Options are :class:`~conan_rag.rag.search.retrieval.RetrievalOptions`
by name; a bad one is a 400 naming it and the valid choices. The cross-encoder is not chosen
per request (a client must not name model folders on the server).

Example:
    >>> options_of(RetrieveRequest(query="cells", options={"k": 2, "retrieval": "hybrid"}))
    RetrievalOptions(k=2, ..., retrieval='hybrid', ...)
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from conan_rag.errors import ConanConfigError, ConanInputError
from conan_rag.rag.search.retrieval import Hit, RetrievalOptions
from conan_rag.server.errors import ApiError
from conan_rag.server.settings import DEFAULT_MAX_K

if TYPE_CHECKING:
    from conan_rag.encoder import Encoder
    from conan_rag.rag.pipeline import Pipeline
    from conan_rag.server.settings import ServerSettings

__all__ = ["RetrieveRequest", "Retriever", "hits_json", "open_retriever", "options_of"]


class RetrieveRequest(BaseModel):
    """``POST /v1/retrieve``: one query or a list, and retrieval options by name."""

    model_config = ConfigDict(extra="forbid")

    query: str | list[str] = Field(description="a question, or a list of them")
    options: dict[str, Any] = Field(default_factory=dict, description="RetrievalOptions fields")


def options_of(body: RetrieveRequest, max_k: int = DEFAULT_MAX_K) -> RetrievalOptions:
    """The request's :class:`RetrievalOptions`, or the 400 naming the bad one.

    Raises:
        ApiError: 400 for an unknown or invalid option, a ``reranker``, or ``k`` or ``fetch_k``
            over ``max_k``.
    """
    if body.options.get("reranker") is not None:
        raise ApiError(
            400,
            "options.reranker cannot be chosen per request: a cross-encoder is a model folder "
            "on the server. Omit it.",
            param="options.reranker",
        )
    try:
        options = RetrievalOptions.from_dict(body.options)
    except ConanConfigError as exc:
        raise ApiError(400, f"options: {exc}", param=f"options.{exc.setting or ''}") from None
    for name in ("k", "fetch_k"):
        value = getattr(options, name)
        if value is not None and value > max_k:
            raise ApiError(
                400,
                f"options.{name} is {value}, over this server's limit of {max_k} hits: ask for "
                "fewer, or start the server with a larger --max-k.",
                param=f"options.{name}",
            )
    return options


def hits_json(hits: list[Hit]) -> list[dict[str, Any]]:
    """Hits as JSON objects: id, text, metadata, score (cosine) and the other scores."""
    return [asdict(hit) for hit in hits]


class Retriever:
    """One collection searched with the served encoder.

    Args:
        pipeline: the collection's pipeline (its encoder is the server's).
    """

    def __init__(self, pipeline: Pipeline) -> None:
        from conan_rag.encoder import Encoder

        if not isinstance(pipeline.encoder, Encoder):
            raise TypeError("a served collection needs a loaded Encoder, not a remote one")
        self.pipeline = pipeline
        self.encoder: Encoder = pipeline.encoder
        self.name = pipeline.name

    async def retrieve(self, queries: list[str], options: RetrievalOptions) -> list[list[Hit]]:
        """The hits of each query, as ``Pipeline.retrieve_many`` gives them.

        Raises:
            ApiError: 400 for an empty query.
        """
        try:
            return await asyncio.to_thread(self.pipeline.retrieve_many, queries, options)
        except ConanInputError as exc:
            raise ApiError(400, str(exc), param="query") from None

    def describe(self) -> dict[str, Any]:
        """``GET /v1/collections``'s entry for this collection."""
        from conan_rag.rag.evaluation import recorded_sweep

        encoder = self.pipeline.encoder
        return {
            "name": self.name,
            "chunks": self.pipeline.collection.count(),
            "model_id": encoder.model_id,
            "fingerprint": encoder.fingerprint,
            "sweep": recorded_sweep(self.pipeline.store),  # the last `conan-rag eval`'s, or None
        }


def open_retriever(settings: ServerSettings, encoder: Encoder | None) -> Retriever:
    """The collection of ``settings``, opened for reading, searched with ``encoder``.

    With ``encoder=None``, the model the collection records is loaded, on the settings' device
    and dtype.

    Raises:
        ConanRagError: no such collection, a model that differs from the collection's, or a
            store that cannot be opened (each message names the fix).
    """
    from conan_rag.rag.pipeline import Pipeline
    from conan_rag.rag.store import open_client, recorded_config
    from conan_rag.registry import load_encoder

    assert settings.collection is not None
    client = open_client(settings.db, settings.chroma_url, write=False)
    if encoder is None:
        recorded = recorded_config(client, settings.collection)
        if recorded is not None:
            config = recorded.replace(device=settings.device, dtype=settings.dtype)
            encoder = load_encoder(config=config)
    pipeline = Pipeline(
        encoder,
        db=settings.db,
        url=settings.chroma_url,
        client=client,
        collection=settings.collection,
        create=False,
    )
    return Retriever(pipeline)


def load_served(
    settings: ServerSettings, encoder: Encoder | None = None
) -> tuple[Encoder, Retriever | None]:
    """What a server serves: its encoder and, with ``settings.collection``, its retriever.

    The encoder is ``encoder``, else the settings' model, else the one the collection records;
    its fingerprint is hashed here, not on the first ``/info``.

    Raises:
        ConanRagError: the model cannot be loaded, or the collection cannot be opened.
    """
    from conan_rag.registry import load_encoder

    if encoder is None and settings.model is not None:
        encoder = load_encoder(config=settings.encoder_config())
    retriever = None
    if settings.collection is not None:
        retriever = open_retriever(settings, encoder)
        encoder = retriever.encoder
    assert encoder is not None  # settings.validate: a model, or a collection to read it from
    _ = encoder.fingerprint  # hashed before serving, not on the first /info
    return encoder, retriever
