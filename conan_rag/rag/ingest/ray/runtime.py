"""The Ray runtime an ingest runs in: started or joined for one run, and the errors it retries.

Ray itself is imported only when a run starts (it is the optional extra ``conan-rag[ray]``).

Example:
    >>> "ray://HOST:PORT" in ADDRESSES
    True
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

ADDRESSES = ("local", "auto", "ray://HOST:PORT")
INSTALL = "pip install 'conan-rag[ray]'"
__all__ = ["ADDRESSES", "INSTALL", "noting_sigint", "ray_runtime", "retryable_errors"]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # Ray Data is the part we need
    except ImportError as exc:
        raise ImportError(
            f"The Ray ingest needs Ray Data ({exc}); install it with `{INSTALL}`."
        ) from None
    return ray


@contextmanager
def ray_runtime(address: str, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray at ``address``, shut down after if this call started it.

    ``address`` is a :class:`~conan_rag.rag.ingest.ray.RayEngine` address; ``num_cpus`` sizes a
    ``"local"`` runtime.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Workers inherit this process's environment on a local runtime; on a cluster, the Chroma
    # token is passed to the writer actors only (see _write_stage).
    if address == "local":
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def retryable_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for lost actors, workers, objects and nodes (not errors in our code)."""
    names = (
        "ActorDiedError",
        "ActorUnavailableError",
        "WorkerCrashedError",
        "ObjectLostError",
        "NodeDiedError",
        "OwnerDiedError",
    )
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


@contextmanager
def noting_sigint() -> Iterator[threading.Event]:
    """Ctrl-C raises ``KeyboardInterrupt`` as usual, and also sets the event yielded.

    A ``KeyboardInterrupt`` that lands where Python ignores exceptions (a finalizer run on the
    main thread, of which a Ray Data driver runs many) is lost; the driver checks the event
    after every batch, so such a Ctrl-C still stops the run there. Outside the main thread, or
    when SIGINT is ignored, nothing changes.

    Example:
        >>> with noting_sigint() as stopped:
        ...     stopped.is_set()
        False
    """
    stopped = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield stopped
        return

    def note(signum: int, frame: FrameType | None) -> None:
        stopped.set()
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)
