"""``conan-rag serve``: the shared encoder as an OpenAI- and TEI-compatible embeddings server.

Many processes (notebooks, a LangChain app, an ingestion job, several web workers) share one
model on one device: the server runs the shared encoder, whose batching queue coalesces every
client's requests. Needs the ``serve`` extra: ``pip install 'conan-rag[serve]'`` (FastAPI,
uvicorn, prometheus_client). The HTTP contract is in :mod:`conan_rag.server.app`.

* :class:`ServerSettings` (:mod:`~conan_rag.server.settings`): model, address, key, limits.
* :func:`create_app` (:mod:`~conan_rag.server.app`): the ASGI app, for your own uvicorn.
* :func:`serve` (:mod:`~conan_rag.server.run`): bind, load, serve until SIGTERM, drain.

Importing this package is light (no web framework) until ``create_app`` or ``serve`` is used.

Example:
    >>> from conan_rag.server import ServerSettings
    >>> ServerSettings().port
    8080
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conan_rag.server.settings import ServerSettings

if TYPE_CHECKING:
    from conan_rag.server.app import create_app
    from conan_rag.server.run import serve

__all__ = ["ServerSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    """Import the web framework's parts on first use."""
    if name == "create_app":
        from conan_rag.server.app import create_app

        return create_app
    if name == "serve":
        from conan_rag.server.run import serve

        return serve
    raise AttributeError(f"module 'conan_rag.server' has no attribute {name!r}")
