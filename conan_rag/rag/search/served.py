"""ServedCollection: a collection searched by a ``conan-rag serve --collection`` server.

It has the ``retrieve`` / ``retrieve_many`` of :class:`~conan_rag.rag.pipeline.Pipeline` and
answers the same hits (the server runs ``Pipeline.retrieve_many``), so the LangChain and
LlamaIndex retrievers take either: a process that only searches needs no model and no store.
The cross-encoder is the server's choice, not a request's (``options.reranker`` must be
``None``).

Example (with a server running)::

    served = ServedCollection("http://127.0.0.1:8080")
    hits = served.retrieve("Who first climbed Everest?", RetrievalOptions(k=3))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from conan_rag.errors import ConanConfigError
from conan_rag.rag.search.retrieval import Hit, RetrievalOptions
from conan_rag.remote import API_KEY_ENV, TIMEOUT_S, ServerClient

__all__ = ["ServedCollection"]


class ServedCollection(ServerClient):
    """The collection a server searches, used like a pipeline's (``retrieve``).

    Args:
        endpoint: the server's base URL, ``http(s)://HOST:PORT``.
        api_key: its API key; default ``$CONAN_RAG_API_KEY`` (none when unset).
        timeout: seconds to wait for one request.

    Raises:
        ServerError: no server answers, or it serves no collection (start it with
            ``--collection``).
    """

    def __init__(
        self, endpoint: str, *, api_key: str | None = None, timeout: float = TIMEOUT_S
    ) -> None:
        key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        super().__init__(endpoint, api_key=key, timeout=timeout)
        described: dict[str, Any] = self._get("/v1/collections")["data"][0]
        self.name = str(described["name"])
        self.model_id = str(described["model_id"])
        self.fingerprint = str(described["fingerprint"])

    def __repr__(self) -> str:
        return f"ServedCollection(endpoint={self.endpoint!r}, name={self.name!r})"

    def retrieve(self, query: str, options: RetrievalOptions | None = None) -> list[Hit]:
        """The best chunks for a query, as ``Pipeline.retrieve`` gives them."""
        return self.retrieve_many([query], options)[0]

    def retrieve_many(
        self, queries: Sequence[str], options: RetrievalOptions | None = None
    ) -> list[list[Hit]]:
        """:meth:`retrieve` for many queries, in one request.

        Raises:
            ConanConfigError: ``options.reranker`` is set (the server decides that).
            ConanInputError: the server refused the request (an empty query, a bad option).
        """
        options = options or RetrievalOptions()
        if options.reranker is not None:
            raise ConanConfigError(
                "A served collection is reranked by the server, not per request; pass "
                "reranker=None.",
                setting="reranker",
                value=options.reranker,
            )
        wire = {k: v for k, v in options.to_dict().items() if k != "reranker"}
        data = self._post("/v1/retrieve", {"query": list(queries), "options": wire})["data"]
        return [[Hit(**hit) for hit in item["hits"]] for item in data]
