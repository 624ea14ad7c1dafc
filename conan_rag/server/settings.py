"""ServerSettings: everything ``conan-rag serve`` runs with, as data (no web framework imported).

Example:
    >>> s = ServerSettings(model="sentence-transformers/all-MiniLM-L6-v2", api_key="s3cret")
    >>> ServerSettings.from_dict(s.to_dict()) == s, s.loopback
    (True, True)
    >>> "s3cret" in repr(s)  # the key is never shown
    False
    >>> s.queued_token_limit(8192)  # no max_queued_tokens given: 16 token budgets
    131072
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from conan_rag.config import EncoderConfig
from conan_rag.errors import ConanConfigError
from conan_rag.model.files import DEFAULT_MODEL
from conan_rag.remote import API_KEY_ENV
from conan_rag.settings import Settings, check_choice, check_float, check_int

__all__ = [
    "DEFAULT_DRAIN_S",
    "DEFAULT_HOST",
    "DEFAULT_MAX_INPUTS",
    "DEFAULT_MAX_K",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_PORT",
    "LOG_LEVELS",
    "QUEUED_BUDGETS",
    "ServerSettings",
    "is_loopback",
    "missing_extra",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_INPUTS = 2048  # OpenAI's own cap on texts per request
DEFAULT_MAX_K = 1000  # the most hits (and candidates) one search may ask for
# The largest request body read (more: 413 before it is parsed). TEI's default is 2 MB for 32
# texts; 2048 texts of 512 tokens need about 4 MiB of English, or about 9 MiB of Chinese sent
# with JSON's \u escapes (6 bytes a character): 16 MiB refuses none of those.
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# Without max_queued_tokens: this many of the encoder's token budgets may wait (admitted, not yet
# answered). The queue runs at most 4 budgets per cycle, so a full queue is about 4 cycles of
# work: seconds on a CPU (8192-token budget: 131072 tokens) or a GPU (65536: ~1M tokens).
QUEUED_BUDGETS = 16
DEFAULT_DRAIN_S = 30.0  # SIGTERM: the longest to wait for requests in flight (Kubernetes: 30 s)
LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug")


def _env_api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def missing_extra(exc: ImportError) -> str:
    """The message for a server dependency that is not installed.

    Example:
        >>> missing_extra(ImportError("No module named 'uvicorn'"))  # doctest: +ELLIPSIS
        "`conan-rag serve` needs FastAPI, uvicorn and prometheus_client (No module ...
    """
    return (
        f"`conan-rag serve` needs FastAPI, uvicorn and prometheus_client ({exc}); install them "
        "with `pip install 'conan-rag[serve]'`."
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


@dataclass(frozen=True)
class ServerSettings(Settings):
    """Settings of one server process.

    Attributes:
        model: model folder or hub id (from the local cache); default Conan-embedding-v1.
        revision: hub revision to resolve in the local cache.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        host: address to listen on; the default accepts local connections only.
        port: TCP port; ``0`` lets the system pick a free one.
        api_key: the key clients must send as ``Authorization: Bearer <key>`` (all endpoints
            but ``/health`` and ``/metrics``); default ``$CONAN_RAG_API_KEY``; ``None``: open.
            Never shown by ``repr`` (but in :meth:`to_dict`: do not log that).
        max_inputs: the most texts in one request (more: 413).
        max_k: the most hits, and candidates (``fetch_k``), one search may ask for (more: 400).
        max_request_bytes: the largest request body read (more: 413, before it is parsed).
        max_queued_tokens: the most tokens admitted and not yet answered (more: 429 with
            ``Retry-After``); ``None``: :data:`QUEUED_BUDGETS` times the encoder's token budget.
            A request arriving at an empty queue is always admitted, however large: one over a
            quarter of the limit is served in slices of that many tokens, and only its slices
            in flight count, so other requests are admitted and served between them.
        strict_model: answer 404 to a request naming another model (default: serve it, log it).
        log_level: uvicorn's and conan-rag's log level (``"info"`` logs every request).
        drain_s: on SIGTERM, the longest to wait for requests in flight; those still running
            then are answered 503 and the process exits.
        collection: a collection to search on ``POST /v1/retrieve`` (``None``: embeddings
            only). With ``model=None``, the model it records is served.
        db: the embedded store's folder holding ``collection`` (``None``: the default).
        chroma_url: a Chroma server holding ``collection`` instead of ``db``.
    """

    model: str | None = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = field(default_factory=_env_api_key, repr=False)
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_k: int = DEFAULT_MAX_K
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_queued_tokens: int | None = None
    strict_model: bool = False
    log_level: str = "warning"
    drain_s: float = DEFAULT_DRAIN_S
    collection: str | None = None
    db: str | None = None
    chroma_url: str | None = None

    setting_kind = "server"

    def validate(self) -> None:
        """A port in [0, 65535], positive limits, a known log level, a drain time >= 0."""
        check_int("port", self.port, 0, maximum=65535)
        check_int("max_inputs", self.max_inputs)
        check_int("max_k", self.max_k)
        check_int("max_request_bytes", self.max_request_bytes)
        check_int("max_queued_tokens", self.max_queued_tokens, allow_none=True)
        check_choice("log_level", self.log_level, LOG_LEVELS)
        check_float("drain_s", self.drain_s, 0)
        if self.model is None and self.collection is None:
            raise ConanConfigError(
                "model is None: name a model, or a collection whose recorded model to serve.",
                setting="model",
            )
        if self.db is not None and self.chroma_url is not None:
            raise ConanConfigError(
                "db and chroma_url both name the store; give one of them.", setting="db"
            )

    @property
    def loopback(self) -> bool:
        """Whether the server listens for local connections only."""
        return is_loopback(self.host)

    def encoder_config(self) -> EncoderConfig:
        """The encoder these settings load."""
        return EncoderConfig(
            model=self.model or DEFAULT_MODEL,
            revision=self.revision,
            device=self.device,
            dtype=self.dtype,
        )

    def queued_token_limit(self, token_budget: int) -> int:
        """``max_queued_tokens``, or its default for an encoder with this token budget."""
        return self.max_queued_tokens or QUEUED_BUDGETS * token_budget
