"""Ingest on Ray Data: the same plan as the single-process ingest, cut and embedded on a cluster.

The driver scans the inputs and diffs them against the collection with the single-process code
(:meth:`~conan_rag.rag.ingest.Ingest.plan`: same document hashes, chunk ids, metadata and prune
rules). Ray then runs three stages (:mod:`~conan_rag.rag.ray_stages`):

1. **cut**: Ray tasks read files and cut them into chunks (CPU);
2. **embed**: an actor pool of encoders, each loading the model once (one actor per GPU with
   ``gpus_per_encoder=1``, or N CPU actors), embeds in the encoder's token-budget batches;
3. **write**: upserts in batches no larger than the store's limit, with retries and back-off:
   from the driver into an embedded store, or from a pool of writer actors into a Chroma server.
   With ``to_parquet`` the vectors go to Parquet files instead (see :mod:`~conan_rag.rag.export`).

A document is marked complete (chunk 0 gets its ``n_chunks``) only after every stage has
finished, so all its chunks are stored; then its stale chunks are deleted. Every write is an
idempotent upsert of deterministic ids, so Ray's task retries and a re-run after a killed driver
add no duplicates, and a re-run embeds only what is missing. A run that loses an actor or a
worker (``ray.kill``, a crash, a lost node) plans again from the collection and finishes what
is missing, up to ``attempts`` times.

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

import functools
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conan_rag.errors import ConanConfigError
from conan_rag.rag import ray_stages
from conan_rag.rag.export import CHUNKS, check_export_folder, report_of, write_export
from conan_rag.rag.ingest import Ingest, Plan
from conan_rag.rag.report import IngestInterrupted, IngestReport
from conan_rag.rag.store import TOKEN_ENV

if TYPE_CHECKING:
    import ray.data

    from conan_rag.rag.documents import DocumentLike

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
        ray.init(address="local", num_cpus=engine.num_cpus, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)  # fmt: skip
    else:
        ray.init(address=engine.address, configure_logging=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _retryable(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for lost actors, workers, objects and nodes (not errors in our code)."""
    names = ("ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
             "ObjectLostError", "NodeDiedError", "OwnerDiedError")  # fmt: skip
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class RayIngest:
    """One ingest on Ray: plan on the driver, cut/embed/write on Ray (see the module docstring).

    Args:
        ingest: the single-process ingest of the collection (its plan is used as it is).
        engine: how to run on Ray.
        url: the Chroma server's URL when the collection lives on one (writers run on Ray),
            else ``None`` (the driver writes into its embedded store).
        collection_name: the collection's name (for writer actors).
        to_parquet: write ids, texts, metadata and vectors to Parquet files in this new (or
            empty) folder instead of the collection; ``conan-rag load`` stores them later
            (:mod:`~conan_rag.rag.export`). The plan is still made against the collection.
    """

    def __init__(
        self,
        ingest: Ingest,
        engine: RayEngine,
        *,
        url: str | None,
        collection_name: str,
        to_parquet: str | Path | None = None,
    ) -> None:
        self.ingest = ingest
        self.engine = engine
        self.url = url
        self.name = collection_name
        self.to_parquet = None if to_parquet is None else check_export_folder(to_parquet)
        self.attempts_used = 0

    @property
    def report(self) -> IngestReport:
        """The report of the run (updated as it goes)."""
        return self.ingest.report

    def run(
        self, inputs: Iterable[str | Path | DocumentLike], *, prune: bool = False
    ) -> IngestReport:
        """Ingest on Ray; a lost actor or worker makes it plan again and finish what is missing.

        Raises:
            InputPathError: a named path does not exist (nothing is read, written or deleted).
            IngestInterrupted: Ctrl-C; its ``report`` says what was committed (re-run resumes).
        """
        inputs = list(inputs)
        progress = self.ingest.progress
        try:
            progress.phase("starting ray", unit="step")
            with ray_runtime(self.engine) as ray:
                added: dict[str, bool] = {}  # first plan's view: a retried document stays "added"
                for attempt in range(1, self.engine.attempts + 1):
                    self.attempts_used = attempt
                    self._reset_report()
                    plan = self.ingest.plan(inputs, prune=prune)
                    for key, job in plan.todo.items():
                        job.added = added.setdefault(key, job.added)
                    try:
                        self._execute(ray, plan)
                        break
                    except _retryable(ray) as exc:
                        if attempt == self.engine.attempts:
                            raise
                        logger.warning("Ray lost a worker (%s); planning again from the "
                                       "collection (attempt %d of %d)", type(exc).__name__,
                                       attempt + 1, self.engine.attempts)  # fmt: skip
        except KeyboardInterrupt:
            progress.close()
            self.report.interrupted = True
            raise IngestInterrupted(self.report) from None
        progress.close()
        return self.report

    def _reset_report(self) -> None:
        self.ingest.report = IngestReport()
        self.ingest._seen.clear()

    # -- the dataset ------------------------------------------------------------------------
    def _units(self, plan: Plan) -> list[dict[str, Any]]:
        """One row per file or in-memory document with something to embed."""
        by_source: dict[str, dict[str, Any]] = {}
        for key, job in plan.todo.items():
            by_source.setdefault(job.source, {})[key] = job
        items = []
        for unit in plan.units:
            if isinstance(unit, Path):
                jobs = by_source.get(str(unit), {})
            else:
                found = plan.todo.get(unit.key)
                jobs = {unit.key: found} if found and found.source == unit.source else {}
            if jobs:
                encoding = self.ingest._encodings.get(unit, "") if isinstance(unit, Path) else ""
                items.append({"unit": pickle.dumps(unit), "jobs": pickle.dumps(jobs),
                              "encoding": encoding})  # fmt: skip
        return items

    def dataset(self, ray: Any, plan: Plan) -> ray.data.Dataset:
        """The cut → embed pipeline of a plan (lazy: nothing runs until it is consumed)."""
        import ray.data
        from ray.data import ActorPoolStrategy

        encoder = self.ingest.encoder
        engine = self.engine
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # our progress reports the run, per batch
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = self._units(plan)
        blocks = max(1, min(len(items), 64))
        config = encoder.config.replace(device="cuda" if engine.gpus_per_encoder else "cpu")
        return (
            ray.data.from_items(items, override_num_blocks=blocks)
            .map_batches(
                ray_stages.cut_units,
                batch_size=1,
                batch_format="numpy",
                fn_kwargs={"chunker": self.ingest.chunker},
                num_cpus=1,
            )
            .map_batches(
                ray_stages.EmbedChunks,
                fn_constructor_kwargs={
                    "config": config.to_dict(),
                    "fingerprint": encoder.fingerprint,
                    "threads": engine.threads_per_encoder,
                },
                batch_size=engine.batch_rows,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=engine.encoders),
                num_cpus=engine.cpus_per_encoder,
                num_gpus=engine.gpus_per_encoder,
            )
        )

    def _write_stage(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        from ray.data import ActorPoolStrategy

        token = os.environ.get(TOKEN_ENV)
        remote_args: dict[str, Any] = {}
        if token:  # for writers on other nodes (a local runtime inherits the environment)
            remote_args["runtime_env"] = {"env_vars": {TOKEN_ENV: token}}
        return ds.map_batches(
            ray_stages.WriteChroma,
            fn_constructor_kwargs={
                "url": self.url,
                "collection": self.name,
                "limit": self.ingest.write_batch,
            },
            batch_size=None,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=self.engine.writers),
            num_cpus=0.25,
            **remote_args,
        )

    def _execute(self, ray: Any, plan: Plan) -> None:
        if self.to_parquet is not None:
            self.ingest.progress.phase("exporting", unit="file")
            ds = self.dataset(ray, plan) if plan.todo else None
            ray.data.DataContext.get_current().enable_progress_bars = self.ingest.progress.show
            try:
                manifest = write_export(ds, self.to_parquet, self.ingest.encoder, plan, self.name)
            except BaseException:
                shutil.rmtree(self.to_parquet / CHUNKS, ignore_errors=True)  # ours: it was empty
                raise
            self.ingest.report = report_of(manifest, self.report)
            return
        report, progress = self.report, self.ingest.progress
        total = sum(job.chars for job in plan.todo.values())
        completions: list[tuple[str, int]] = []  # (chunk 0 id, count): ~100 bytes per document
        stale: list[str] = list(plan.deletions)
        if plan.todo:
            ds = self.dataset(ray, plan)
            if self.url is not None:
                ds = self._write_stage(ds)
            progress.phase("embedding", total=total, unit="char")
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                if self.url is None:
                    batch = ray_stages.write_rows(
                        self.ingest.collection, batch, self.ingest.write_batch
                    )
                written = self._tally(batch, completions, stale)
                progress.advance(int(batch["chars"].sum()), chunks=written)
        progress.phase("completing", total=len(completions) + len(stale), unit="record")
        self._complete(completions, stale)
        report.completed = len(completions)

    def _tally(self, batch: ray_stages.Batch, completions: list[tuple[str, int]],
               stale: list[str]) -> int:  # fmt: skip
        """Count a written batch into the report; return how many chunks it wrote."""
        report = self.report
        before = report.chunks_embedded
        for kind, chunk_id, key, n, stale_json, added, text in zip(
            batch["kind"], batch["id"], batch["key"], batch["n"], batch["stale"],
            batch["added"], batch["text"],
        ):  # fmt: skip
            if kind == "skip":
                report.skipped.append((str(key), str(text)))
                continue
            if kind in ray_stages.EMBEDDED:
                report.chunks_embedded += 1
            if kind in ("first", "done"):
                if kind == "first":
                    completions.append((str(chunk_id), int(n)))
                stale.extend(json.loads(stale_json))
                if added:
                    report.added += 1
                else:
                    report.updated += 1
        return report.chunks_embedded - before

    def _complete(self, completions: list[tuple[str, int]], stale: list[str]) -> None:
        """Mark documents complete (chunk 0 gets its count), then delete stale chunks."""
        collection, limit = self.ingest.collection, self.ingest.write_batch
        progress = self.ingest.progress
        for start in range(0, len(completions), limit):
            part = completions[start : start + limit]
            update = functools.partial(
                collection.update,
                ids=[i for i, _ in part],
                metadatas=[{"n_chunks": n} for _, n in part],
            )
            ray_stages.with_retries(update, f"completion of {len(part)} documents")
            progress.advance(len(part))
        for start in range(0, len(stale), limit):
            part_ids = stale[start : start + limit]
            delete = functools.partial(collection.delete, ids=part_ids)
            ray_stages.with_retries(delete, f"deletion of {len(part_ids)} chunks")
            progress.advance(len(part_ids))
        self.report.chunks_deleted += len(stale)
