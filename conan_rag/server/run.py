"""``serve``: bind, load the model, run the app with uvicorn until SIGINT or SIGTERM, drain, return.

The order fails fast and cheap first: the address is bound before the model loads (a taken port
is reported at once), and the model loads before the first connection is accepted. On SIGTERM
or Ctrl-C uvicorn stops accepting connections and lets requests in flight finish; those still
running after ``drain_s`` seconds are answered 503 (their work dropped from the queue), then the
app's shutdown runs; :func:`serve` then returns what stopped it and how many requests were cut,
so the caller exits 0. (uvicorn re-raises a caught signal after draining, which would end the
process by SIGTERM's default action or a ``KeyboardInterrupt``; :func:`serve` takes it instead.)

Example (blocks until stopped)::

    serve(ServerSettings(model="sentence-transformers/all-MiniLM-L6-v2", port=0),
          on_ready=lambda encoder, url: print("ready on", url))
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from conan_rag.server.settings import ServerSettings, missing_extra

try:
    import uvicorn
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(missing_extra(exc)) from exc

from conan_rag.encoder import Encoder
from conan_rag.server.app import create_app
from conan_rag.server.errors import ServerBindError

logger = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
ReadyCallback = Callable[[Encoder, str], None]
# After the drain limit cuts the requests still running, their 503s are sent within this long;
# uvicorn then cancels what is left (its own timeout: drain_s plus this).
CUT_GRACE_S = 5
OWN_ADDRESSES = "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"


@dataclass(frozen=True)
class Stopped:
    """How :func:`serve` ended.

    Attributes:
        signal: the signal that stopped it (``"SIGTERM"``, ``"SIGINT"``), or None.
        cut: requests still running at the drain limit, answered 503 instead.
        drain_s: the drain limit.
    """

    signal: str | None
    cut: int = 0
    drain_s: float = 0.0


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), as uvicorn would bind it.

    Raises:
        ServerBindError: the port is taken, or the address is not one of this machine's.

    Example:
        >>> sock = bind("127.0.0.1", 0)
        >>> sock.getsockname()[1] > 0
        True
        >>> sock.close()
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        reason = f"the name {host!r} does not resolve to an address ({exc.strerror or exc})"
        fix = f"Pass an IP address, such as {OWN_ADDRESSES}, or a name this machine resolves."
        raise ServerBindError(host, port, reason, fix=fix) from None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ServerBindError(host, port, exc.strerror or str(exc)) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            reason = f"{host} is not an address of this machine ({exc.strerror})"
            fix = f"Pass one of its own addresses, such as {OWN_ADDRESSES}."
            raise ServerBindError(host, port, reason, fix=fix) from None
        in_use = exc.errno == errno.EADDRINUSE
        raise ServerBindError(host, port, exc.strerror or str(exc), in_use=in_use) from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, calling back once it accepts connections, cutting requests at the drain."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None],
        drain_s: float,
        cut_requests: Callable[[], int],
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._drain_s = drain_s
        self._cut_requests = cut_requests

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = asyncio.get_running_loop().call_later(self._drain_s, self._drain_limit)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()

    def _drain_limit(self) -> None:
        cut = self._cut_requests()
        if cut:
            logger.warning(
                "The drain limit (%g s) passed: %d request(s) still running answered 503.",
                self._drain_s,
                cut,
            )


@contextlib.contextmanager
def _taking_signals(received: list[str]) -> Iterator[None]:
    """Record SIGINT/SIGTERM (raised again by uvicorn after draining) instead of dying of them."""

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, remember) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure_logging(level: str) -> None:
    log = logging.getLogger("conan_rag")
    log.setLevel(level.upper())
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
        log.addHandler(handler)


def serve(
    settings: ServerSettings,
    *,
    encoder: Encoder | None = None,
    on_ready: ReadyCallback | None = None,
) -> Stopped:
    """Run the server in this thread until SIGINT or SIGTERM, then drain (at most ``drain_s``).

    Args:
        settings: model, address, key and limits.
        encoder: an encoder already loaded to serve (default: load ``settings.model``).
        on_ready: called with the encoder and the server's URL once it accepts connections
            (with ``port=0``, the URL has the port the system picked).

    Returns:
        The signal that stopped the server (``"SIGTERM"``, ``"SIGINT"``; None: it exited) and
        how many requests the drain limit cut (answered 503).

    Raises:
        ServerBindError: the address cannot be bound.
        ConanModelError: the model cannot be loaded (``ModelNotFoundError``: not found).
        ConanConfigError: a bad device or dtype.
    """
    from conan_rag.server.retrieval import load_served

    sock = bind(settings.host, settings.port)
    _configure_logging(settings.log_level)
    try:
        # loaded (and the collection opened) before serving: a refusal exits here
        encoder, retriever = load_served(settings, encoder)
        url = url_of(sock)
        loaded: Encoder = encoder
        app = create_app(settings, loaded, retriever=retriever)
        config = uvicorn.Config(
            app,
            log_level=settings.log_level,
            access_log=settings.log_level in ("info", "debug"),
            timeout_graceful_shutdown=math.ceil(settings.drain_s) + CUT_GRACE_S,
            lifespan="on",
        )
        ready: Callable[[], Any] = (lambda: on_ready(loaded, url)) if on_ready else (lambda: None)
        state = app.state.server
        server = _Server(config, ready, settings.drain_s, state.cut_requests)
        received: list[str] = []
        with _taking_signals(received):
            server.run(sockets=[sock])
    finally:
        sock.close()
    return Stopped(received[0] if received else None, state.cut, settings.drain_s)
