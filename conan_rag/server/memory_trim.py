"""Memory back after a large request: trim the heap once the server is idle again.

A large request (many texts, or a long one) leaves its freed tokens, activations and response
bytes as fragments of glibc's per-thread arenas, so the server's resident memory stays near its
peak although little is in use. ASGI middleware notes each request whose body is at least
:data:`LARGE_BODY` bytes and, when the last request in flight has been answered, returns those
fragments with :func:`~conan_rag.runtime.memory.release_free_memory` (``malloc_trim``) in a
worker thread. ``python benchmarks/serve_big_requests.py`` measures the server's RSS before,
at its peak and after.

Example:
    >>> TrimMiddleware(app=None).due
    False
"""

from __future__ import annotations

import asyncio
from typing import Any

from conan_rag.runtime.memory import release_free_memory

LARGE_BODY = 1 << 20  # a request body of at least this many bytes is followed by a trim


class TrimMiddleware:
    """Trim the heap when the server goes idle after a large request.

    Args:
        app: the ASGI app.
        large_body: body bytes from which a request counts as large.
    """

    def __init__(self, app: Any, large_body: int = LARGE_BODY) -> None:
        self.app = app
        self.large_body = large_body
        self.in_flight = 0
        self.due = False  # a large request was answered since the last trim
        self.trims = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on; after the last one in flight, trim if a large one was seen."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.due = self.due or _is_large(scope, self.large_body)
            if self.due and self.in_flight == 0:
                self.due = False
                self.trims += 1
                await asyncio.to_thread(release_free_memory)


def _is_large(scope: Any, large_body: int) -> bool:
    """Whether the request's body has at least ``large_body`` bytes (chunked: assumed so)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return value.isdigit() and int(value) >= large_body
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False
