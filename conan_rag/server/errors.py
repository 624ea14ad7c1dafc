"""The server's errors: :class:`ApiError` (an HTTP answer in OpenAI's error format) and bind errors.

Every refusal the server makes is an :class:`ApiError`; :mod:`conan_rag.server.responses` turns
it into OpenAI's JSON error body, which the openai SDK, LangChain and LlamaIndex show their users.

Example:
    >>> err = ApiError(413, "input has 3000 items; the most is 2048.", param="input")
    >>> err.body()["error"]["type"], err.status
    ('invalid_request_error', 413)
"""

from __future__ import annotations

from conan_rag.errors import ConanRagError

# OpenAI's error "type" for each status the server answers with.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """A request refused (or failed) with an HTTP status and OpenAI's JSON error body.

    Attributes:
        status: the HTTP status.
        message: what went wrong and how to fix it.
        type: OpenAI's error type (from :data:`ERROR_TYPES` unless given).
        param: the request field at fault, when one is.
        code: a short machine-readable code, when there is one.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,  # OpenAI's name for it
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ERROR_TYPES.get(status, "server_error" if status >= 500 else "")
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ServerBindError(ConanRagError, OSError):
    """The server cannot listen on the address asked for (port taken, address not here).

    Attributes:
        host: the address asked for.
        port: the port asked for.
        in_use: whether the port is taken.

    Example:
        >>> err = ServerBindError("127.0.0.1", 80, "Address already in use", in_use=True)
        >>> str(err)  # doctest: +ELLIPSIS
        'Cannot listen on 127.0.0.1:80: Address already in use. Choose another port (0 ...'
    """

    def __init__(
        self, host: str, port: int, reason: str, *, fix: str | None = None, in_use: bool = False
    ) -> None:
        if fix is None:
            fix = (
                "Choose another port (0 picks a free one), or stop the process using it."
                if in_use
                else "Choose another host or port (0 picks a free one)."
            )
        super().__init__(f"Cannot listen on {host}:{port}: {reason}. {fix}")
        self.host = host
        self.port = port
        self.in_use = in_use
