"""The request body cap: ASGI middleware answering 413 before an over-large body is parsed.

A body over ``max_bytes`` (by its ``Content-Length``, or counted as it arrives when it is sent
chunked) is answered 413 in OpenAI's error shape, as TEI answers one over its
``--payload-limit``. The body is read and dropped as it arrives (up to :data:`DISCARD_BYTES`), so
the client, still sending, reads the answer instead of a broken connection, and the server never
holds more than ``max_bytes`` of it.

Example:
    >>> too_large(3_000_000, 2_000_000).status
    413
"""

from __future__ import annotations

import json
from typing import Any

from conan_rag.server.errors import ApiError

DISCARD_BYTES = 256 * 1024 * 1024  # bodies over the cap are drained up to this, then cut off


def too_large(size: int, max_bytes: int, *, at_least: bool = False) -> ApiError:
    """The 413 refusing a body of ``size`` bytes (``at_least``: more were still coming)."""
    has = f"more than {max_bytes:,}" if at_least else f"{size:,}"
    return ApiError(
        413,
        f"The request body has {has} bytes; this server reads at most {max_bytes:,} "
        "(its max_request_bytes setting: `conan-rag serve --max-request-bytes N`). Send fewer "
        "or shorter texts per request: texts over the model's max_seq_length tokens are cut "
        "there anyway.",
        code="request_too_large",
    )


async def send_error(send: Any, error: ApiError) -> None:
    """Answer ``error`` on a raw ASGI ``send`` (OpenAI's error body, closing the connection)."""
    body = json.dumps(error.body()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _discard(receive: Any, received: int) -> None:
    """Read and drop the rest of a body (at most :data:`DISCARD_BYTES` in all)."""
    while received < DISCARD_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodySizeMiddleware:
    """Refuse (413) request bodies over ``max_bytes`` before the app reads them.

    Args:
        app: the ASGI app.
        max_bytes: the largest body passed on.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.strip().isdigit():
            size = int(length)
            if size <= self.max_bytes:  # the server reads no more than Content-Length says
                await self.app(scope, receive, send)
                return
            await _discard(receive, 0)
            await send_error(send, too_large(size, self.max_bytes))
            return
        await self._chunked(scope, receive, send)

    async def _chunked(self, scope: Any, receive: Any, send: Any) -> None:
        """A body without ``Content-Length``: buffered up to the cap, then replayed to the app."""
        messages: list[Any] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                more = message.get("more_body", False)
                if more:
                    await _discard(receive, size)
                await send_error(send, too_large(size, self.max_bytes, at_least=more))
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
