"""How to run an ingest on Ray: the engine's settings, and the Ray runtime it runs in.

:class:`RayEngine` is config as data (saved and read back with :meth:`RayEngine.to_dict` /
:meth:`RayEngine.from_dict`); :func:`ray_runtime` starts or joins Ray for one run. Ray itself
is imported only when a run starts (it is the optional extra ``conan-rag[ray]``).

Example:
    >>> RayEngine(address="ray://head:10001", encoders=4, gpus_per_encoder=1).address
    'ray://head:10001'
    >>> RayEngine(address="cluster")
    Traceback (most recent call last):
    ...
    conan_rag.errors.ConanConfigError: Ray address 'cluster' is not one of local, auto or \
ray://HOST:PORT.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

from conan_rag.errors import ConanConfigError

logger = logging.getLogger(__name__)

ADDRESSES = ("local", "auto", "ray://HOST:PORT")
INSTALL = "pip install 'conan-rag[ray]'"


@dataclass(frozen=True)
class RayEngine:
    """How to run an ingest on Ray (config as data: :meth:`to_dict` / :meth:`from_dict`).

    Args:
        address: ``"local"`` starts a Ray runtime on this machine for the run and stops it
            after; ``"auto"`` joins the cluster this machine belongs to; ``"ray://HOST:PORT"``
            connects to a remote cluster with Ray Client. An already initialized Ray is used
            as it is (and left running).
        encoders: encoder actors (one model instance each).
        gpus_per_encoder: GPUs each actor reserves (1 on a GPU cluster: one actor per GPU).
        cpus_per_encoder: CPUs each actor reserves.
        threads_per_encoder: torch threads per actor (default: Ray's, one per reserved CPU).
        writers: writer actors for a Chroma server (an embedded store is written by the
            driver).
        batch_rows: rows per batch sent to an encoder actor.
        attempts: runs (each planned again from the collection) before a lost actor or
            worker fails the ingest.
        num_cpus: CPUs of a ``"local"`` runtime (default: all of this machine's).
    """

    address: str = "local"
    encoders: int = 1
    gpus_per_encoder: float = 0.0
    cpus_per_encoder: float = 1.0
    threads_per_encoder: int | None = None
    writers: int = 1
    batch_rows: int = 256
    attempts: int = 3
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.address not in ("local", "auto") and not self.address.startswith("ray://"):
            raise ConanConfigError(
                f"Ray address {self.address!r} is not one of local, auto or ray://HOST:PORT.",
                setting="address",
                value=self.address,
                choices=ADDRESSES,
            )
        for name in ("encoders", "writers", "batch_rows", "attempts"):
            if int(getattr(self, name)) < 1:
                raise ConanConfigError(
                    f"{name} must be at least 1, not {getattr(self, name)!r}.", setting=name
                )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RayEngine:
        """Settings back from :meth:`to_dict`; unknown keys are refused, naming the valid ones.

        Example:
            >>> RayEngine.from_dict(RayEngine(encoders=2).to_dict()) == RayEngine(encoders=2)
            True
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConanConfigError(
                f"Unknown Ray engine settings {unknown}; valid ones are {sorted(known)}.",
                setting=unknown[0],
                choices=tuple(sorted(known)),
            )
        return cls(**data)


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
def ray_runtime(engine: RayEngine) -> Iterator[Any]:
    """Ray, initialized for ``engine`` (and shut down after, if this call started it)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Workers inherit this process's environment on a local runtime; on a cluster, the Chroma
    # token is passed to the writer actors only (see _write_stage).
    if engine.address == "local":
        ray.init(
            address="local",
            num_cpus=engine.num_cpus,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
    else:
        ray.init(address=engine.address, configure_logging=False, log_to_driver=False)
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
