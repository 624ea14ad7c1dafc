"""The search page at the server's root: ``GET /`` and its script, ``GET /search.js``.

A query box, the retrieval mode, k and a cosine-threshold slider that sorts the hits into those
the threshold keeps and those it cuts (on the page: moving it sends no new search), with each
hit's cosine, source and text; the threshold sweep of the collection's last ``conan-rag eval``
drawn beside it when one was recorded (:func:`conan_rag.rag.evaluation.record_sweep`). Plain
HTML and one script from :mod:`conan_rag.server` itself: no build step, nothing fetched from
elsewhere, so it works offline. The page and script are open (they hold no data); the searches
they send carry the API key typed on the page.

Example:
    >>> b"<title>conan-rag search</title>" in page_file("index.html")
    True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from fastapi import FastAPI, Response

__all__ = ["PAGE_PATHS", "add_page_routes", "page_file"]

PAGE_PATHS = {  # path -> (file in search_page/, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/search.js": ("search.js", "text/javascript; charset=utf-8"),
}


@cache
def page_file(name: str) -> bytes:
    """A file of the page, read once from the package (``conan_rag/server/search_page``)."""
    return resources.files("conan_rag.server").joinpath("search_page", name).read_bytes()


def add_page_routes(app: FastAPI) -> None:
    """Serve the page and its script (both without the API key: they hold no data)."""
    for path, (name, media_type) in PAGE_PATHS.items():
        app.add_api_route(path, _route(name, media_type), methods=["GET"], include_in_schema=False)


def _route(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    """An endpoint answering one file of the page (it takes no parameter)."""

    async def serve() -> Response:
        return Response(page_file(name), media_type=media_type)

    return serve
