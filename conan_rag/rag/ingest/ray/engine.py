"""The Ray engine's run: the shared plan and row stream, cut and embedded on Ray Data.

The driver plans with the task (:meth:`~conan_rag.rag.ingest.engine.IngestTask.plan`: the same
document hashes, chunk ids, metadata and prune rules as the single-process engine). Ray then runs
the row stream (:mod:`~conan_rag.rag.ingest.rows`) in three stages:

1. **cut**: Ray tasks read files and cut them into rows (CPU);
2. **embed**: an actor pool of encoders, each loading the model once (one actor per GPU with
   ``gpus_per_encoder=1``, or N CPU actors), embeds in the encoder's token-budget batches;
3. **write**: through the task's sink: from the driver into an embedded store, from a pool of
   writer actors into a Chroma server, or with Ray Data's Parquet sink for an export.

The driver counts the written rows (:class:`~conan_rag.rag.ingest.sink.Completer`), so a
document is marked complete only once all its chunks are written. Every write is an idempotent
upsert of deterministic ids, so Ray's task retries and a re-run after a killed driver add no
duplicates. A run that loses an actor or a worker (``ray.kill``, a crash, a lost node) plans
again from the collection and finishes what is missing, up to ``attempts`` times. Ctrl-C keeps
every completed document.

Example (``Pipeline.ingest(..., engine=RayEngine(...))`` runs this)::

    from conan_rag.rag import Pipeline, RayEngine
    pipe = Pipeline(load_encoder(), url="http://chroma:8000")
    pipe.ingest(["corpus/"], engine=RayEngine(address="auto", encoders=8, gpus_per_encoder=1))
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from conan_rag.errors import ConanConfigError
from conan_rag.rag.ingest.ray.runtime import (
    ADDRESSES,
    noting_sigint,
    ray_runtime,
    retryable_errors,
)
from conan_rag.rag.ingest.ray.stages import EmbedChunks, WriteStore
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.ingest.rows import EMBEDDED, cut_units
from conan_rag.rag.ingest.sink import Completer, StoreSink
from conan_rag.rag.store import TOKEN_ENV
from conan_rag.settings import Settings, check_float, check_int

if TYPE_CHECKING:
    import ray.data

    from conan_rag.rag.ingest.planning import Input, Plan
    from conan_rag.rag.ingest.task import IngestTask

logger = logging.getLogger(__name__)
__all__ = ["RayEngine", "RayRun"]


@dataclass(frozen=True)
class RayEngine(Settings):
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

    setting_kind: ClassVar[str] = "Ray engine"

    def validate(self) -> None:
        """Check the address and the counts."""
        if self.address not in ("local", "auto") and not self.address.startswith("ray://"):
            raise ConanConfigError(
                f"Ray address {self.address!r} is not one of local, auto or ray://HOST:PORT.",
                setting="address",
                value=self.address,
                choices=ADDRESSES,
            )
        for name in ("encoders", "writers", "batch_rows", "attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConanConfigError(f"{name} must be at least 1, not {value!r}.", setting=name)
        check_float("gpus_per_encoder", self.gpus_per_encoder, 0)
        check_float("cpus_per_encoder", self.cpus_per_encoder, 0)
        check_int("threads_per_encoder", self.threads_per_encoder, allow_none=True)
        check_int("num_cpus", self.num_cpus, allow_none=True)

    @property
    def name(self) -> str:
        """``"ray"``."""
        return "ray"

    def run(self, task: IngestTask, inputs: Sequence[Input], prune: bool) -> None:
        """Run the task on Ray (see :mod:`~conan_rag.rag.ingest.ray.engine`)."""
        RayRun(self, task).run(inputs, prune)


class RayRun:
    """One task run on Ray (see the module docstring).

    Args:
        engine: how to run on Ray.
        task: the run's store, encoder, chunker, sink, progress and report.
    """

    def __init__(self, engine: RayEngine, task: IngestTask) -> None:
        from conan_rag.remote import RemoteEncoder

        if isinstance(task.encoder, RemoteEncoder):
            raise ConanConfigError(
                "The Ray ingest embeds with encoder actors that load the model; it cannot use an "
                "encoder served over HTTP (endpoint). Load the model locally, or ingest without "
                "Ray.",
                setting="endpoint",
            )
        self.engine = engine
        self.task = task
        self.attempts_used = 0

    def run(self, inputs: Sequence[Input], prune: bool) -> None:
        """Plan, then run on Ray; a lost actor or worker makes it plan again."""
        added: dict[str, bool] = {}  # the first plan's view: a retried document stays "added"
        plan = self._plan(inputs, prune, added)
        if not plan.todo:  # nothing to embed (a re-run): no Ray needed
            self._execute(None, plan)
            return
        progress = self.task.progress
        progress.phase("starting ray", total=1, unit="step")
        with ray_runtime(self.engine.address, self.engine.num_cpus) as ray:
            progress.advance(1)
            self._attempts(ray, plan, inputs, prune, added)

    def _attempts(
        self, ray: Any, plan: Plan, inputs: Sequence[Input], prune: bool, added: dict[str, bool]
    ) -> None:
        for attempt in range(1, self.engine.attempts + 1):
            self.attempts_used = attempt
            if attempt > 1:
                plan = self._plan(inputs, prune, added)
            try:
                self._execute(ray, plan)
                return
            except retryable_errors(ray) as exc:
                if attempt == self.engine.attempts:
                    raise
                logger.warning(
                    "Ray lost a worker (%s); planning again from the collection (attempt %d of %d)",
                    type(exc).__name__,
                    attempt + 1,
                    self.engine.attempts,
                )

    def _plan(self, inputs: Sequence[Input], prune: bool, added: dict[str, bool]) -> Plan:
        """Plan (again) from the collection, keeping what earlier attempts wrote."""
        prior, self.task.report = self.task.report, IngestReport()
        plan = self.task.plan(inputs, prune=prune)
        _carry(prior, self.task.report)
        for key, job in plan.todo.items():
            job.added = added.setdefault(key, job.added)
        return plan

    # -- the dataset ------------------------------------------------------------------------
    def dataset(self, ray: Any, plan: Plan) -> ray.data.Dataset:
        """The cut → embed stages of a plan (lazy: nothing runs until it is consumed)."""
        import ray.data
        from ray.data import ActorPoolStrategy

        encoder = self.task.encoder
        engine = self.engine
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # our progress reports the run, per batch
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        items = [{"item": pickle.dumps(item)} for item in plan.items()]
        config = encoder.config.replace(device="cuda" if engine.gpus_per_encoder else "cpu")
        return (
            ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 64)))
            .map_batches(
                cut_units,
                batch_size=1,
                batch_format="numpy",
                fn_kwargs={"chunker": self.task.chunker},
                num_cpus=1,
            )
            .map_batches(
                EmbedChunks,
                fn_constructor_kwargs={
                    "config": config.to_dict(),
                    "fingerprint": encoder.fingerprint,
                    "threads": engine.threads_per_encoder,
                },
                batch_size=engine.batch_rows,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=min(engine.encoders, len(items))),
                num_cpus=engine.cpus_per_encoder,
                num_gpus=engine.gpus_per_encoder,
            )
        )

    def _write_stage(self, ds: ray.data.Dataset, spec: dict[str, Any]) -> ray.data.Dataset:
        from ray.data import ActorPoolStrategy

        token = os.environ.get(TOKEN_ENV)
        remote_args: dict[str, Any] = {}
        if token:  # for writers on other nodes (a local runtime inherits the environment)
            remote_args["runtime_env"] = {"env_vars": {TOKEN_ENV: token}}
        return ds.map_batches(
            WriteStore,
            fn_constructor_kwargs={"spec": spec, "limit": self.task.write_batch},
            batch_size=None,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=self.engine.writers),
            num_cpus=0.25,
            **remote_args,
        )

    def _execute(self, ray: Any, plan: Plan) -> None:
        sink = self.task.out
        write_dataset = getattr(sink, "write_dataset", None)
        if write_dataset is not None:  # a sink Ray Data writes itself (a Parquet export)
            self.task.progress.phase("exporting", unit="file")
            write_dataset(None if ray is None else self.dataset(ray, plan), self.task.progress)
            sink.delete(plan.deletions)
            return
        completer = Completer(sink, self.task.report)
        if ray is not None:
            self._stream(ray, plan, completer)
        completer.delete(plan.deletions)  # emptied and pruned documents, once all else is done

    def _stream(self, ray: Any, plan: Plan, completer: Completer) -> None:
        sink = self.task.out
        ds = self.dataset(ray, plan)
        spec = None
        if isinstance(sink, StoreSink):
            spec = sink.shared_spec()
            if spec is not None:
                sink.mark_changed()  # before the writer actors write
                ds = self._write_stage(ds, spec)
        progress = self.task.progress
        progress.phase("embedding", total=plan.chars, unit="char")
        with noting_sigint() as stopped:
            self._consume(ds, spec, completer, stopped)

    def _consume(
        self,
        ds: Any,
        spec: dict[str, Any] | None,
        completer: Completer,
        stopped: threading.Event,
    ) -> None:
        """Write (or note) each summary batch; a Ctrl-C noted but lost stops at the next one."""
        sink, progress = self.task.out, self.task.progress
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                if spec is None:
                    batch = sink.write(batch)
                elif isinstance(sink, StoreSink):  # the writer actors wrote it
                    sink.written_elsewhere(_written_ids(batch))
                written = completer.tally(batch)
                completer.flush()
                progress.advance(int(batch["chars"].sum()), chunks=written)
                if stopped.is_set():  # the batch in flight is written; stop here
                    raise KeyboardInterrupt
            if stopped.is_set():
                raise KeyboardInterrupt
        finally:  # also on Ctrl-C or a lost actor: documents fully written stay complete
            completer.flush()


def _written_ids(batch: Any) -> list[str]:
    """The chunk ids a summary batch says were written."""
    return [str(i) for i, kind in zip(batch["id"], batch["kind"]) if kind in EMBEDDED]


def _carry(prior: IngestReport, report: IngestReport) -> None:
    """Keep what earlier attempts wrote (the new plan sees their documents as unchanged)."""
    report.added += prior.added
    report.updated += prior.updated
    report.unchanged = max(0, report.unchanged - prior.added - prior.updated)
    report.chunks_embedded += prior.chunks_embedded
    report.chunks_deleted += prior.chunks_deleted
    report.completed += prior.completed
