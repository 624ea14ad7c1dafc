"""Response bodies (vectors as JSON or base64), and handlers giving every error OpenAI's shape.

Bodies are written by orjson, which formats numpy float32 arrays in C with the shortest digits
that read back to the same float32 (exact, a tenth smaller than ``%.9g``): ``vectors_json`` of
32 × 384 vectors takes 0.5 ms where ``"%.9g"`` formatting took 4.8 ms (measured once on this
project's 2-core development machine).

Example:
    >>> import numpy as np
    >>> vectors_json(np.array([[0.5, -0.25]], dtype=np.float32))
    b'[[0.5,-0.25]]'
    >>> base64_vector(np.array([1.0], dtype=np.float32))
    'AACAPw=='
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from conan_rag.errors import QueueShutdownError
from conan_rag.server.errors import ApiError

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _float32(vectors: np.ndarray) -> np.ndarray:
    """C-contiguous float32 (what orjson serialises natively)."""
    return np.ascontiguousarray(vectors, dtype=np.float32)


def vectors_json(vectors: np.ndarray) -> bytes:
    """A JSON array of arrays of numbers, one per row (TEI's ``/embed`` answer)."""
    return orjson.dumps(_float32(vectors), option=_NUMPY)


def base64_vector(vector: np.ndarray) -> str:
    """Base64 of little-endian float32 bytes (what the openai SDK decodes)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def openai_body(vectors: np.ndarray, model: str, tokens: int, encoding_format: str) -> bytes:
    """OpenAI's embeddings answer: ``{"object": "list", "data": [...], "model", "usage"}``."""
    rows = _float32(vectors)
    embed = base64_vector if encoding_format == "base64" else (lambda row: row)
    data = [
        {"object": "embedding", "index": i, "embedding": embed(row)} for i, row in enumerate(rows)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": model, "usage": usage}
    return orjson.dumps(body, option=_NUMPY)


def error_response(error: ApiError) -> JSONResponse:
    """The HTTP response for an :class:`ApiError`."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _invalid_body(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors → 400 naming the field (OpenAI answers 400, not 422)."""
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "malformed")
        message = f"The request body is not valid JSON ({reason})."
        return error_response(ApiError(400, message))
    field = ".".join(loc) or None
    content_type = request.headers.get("content-type", "application/json")
    if field is None and "json" not in content_type:
        message = (
            "The request body must be a JSON object sent with Content-Type: application/json "
            f"(not {content_type!r})."
        )
        return error_response(ApiError(400, message))
    text = str(first.get("msg", "invalid request"))
    message = f"{field}: {text}." if field else f"The request body is invalid: {text}."
    if first.get("type") == "missing":
        message = f"{field} is required."
    return error_response(ApiError(400, message, param=field))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no such path, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"No endpoint {where}."
    elif exc.status_code == 405:
        message = f"{where} is not allowed; see the endpoint's method."
    else:
        message = f"{where}: {exc.detail}"
    return error_response(ApiError(exc.status_code, message, headers=dict(exc.headers or {})))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A failure: 503 while shutting down, else 500 (uvicorn logs the traceback)."""
    if isinstance(exc, QueueShutdownError):
        return error_response(ApiError(503, "The server is shutting down; retry elsewhere."))
    return error_response(ApiError(500, f"Internal error: {type(exc).__name__}: {exc}"))


def install_error_handlers(app: FastAPI) -> None:
    """Give every error of ``app`` OpenAI's JSON error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(QueueShutdownError, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
