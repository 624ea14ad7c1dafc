"""The Ray runtime an ingest runs in: started or joined for one run, and the errors it retries.

Ray itself is imported only when a run starts (it is the optional extra ``conan-rag[ray]``).

Example:
    >>> "ray://HOST:PORT" in ADDRESSES
    True
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

ADDRESSES = ("local", "auto", "ray://HOST:PORT")
INSTALL = "pip install 'conan-rag[ray]'"
__all__ = ["ADDRESSES", "INSTALL", "ray_runtime", "retryable_errors"]


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
