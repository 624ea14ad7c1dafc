"""The API key check: ASGI middleware answering 401 before a request's body is even read.

Every path but ``/health``, ``/metrics`` and the search page (``/``, ``/search.js``: it holds
no data, and its searches send the key typed on it) needs ``Authorization: Bearer <key>`` when the
server has a key. Keys are compared with :func:`hmac.compare_digest` (constant time); neither
the expected nor the offered key is ever logged or echoed.

Example:
    >>> key_matches(b"Bearer s3cret", b"s3cret"), key_matches(b"Bearer guess", b"s3cret")
    (True, False)
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from conan_rag.server.errors import ApiError

OPEN_PATHS = frozenset({"/health", "/metrics", "/", "/search.js"})  # the page holds no data


def key_matches(header: bytes | None, key: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``key`` as a Bearer token."""
    if header is None:
        return False
    scheme, _, token = header.strip().partition(b" ")
    # Compared even when the scheme is wrong, so the time taken does not tell which part was.
    same = hmac.compare_digest(token.strip(), key)
    return same and scheme.lower() == b"bearer"


class ApiKeyMiddleware:
    """Answer 401 (OpenAI's error body) to requests without the right key.

    Args:
        app: the ASGI app to protect.
        api_key: the key; ``None`` lets every request through.
    """

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 401."""
        if self.key is None or scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        if key_matches(header, self.key):
            await self.app(scope, receive, send)
            return
        if header is None:
            message = "Missing API key: send the header `Authorization: Bearer <key>`."
        else:
            message = "Incorrect API key in the Authorization header."
        error = ApiError(401, message, code="invalid_api_key")
        body = json.dumps(error.body()).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
