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

A document is marked complete (chunk 0 gets its ``n_chunks``) only once the driver has seen all
its chunks written (:mod:`~conan_rag.rag.completion`); then its stale chunks are deleted. Every
write is an idempotent upsert of deterministic ids, so Ray's task retries and a re-run after a
killed driver add no duplicates, and a re-run embeds only what is missing. A run that loses an
actor or a worker (``ray.kill``, a crash, a lost node) plans again from the collection and
finishes what is missing, up to ``attempts`` times. Ctrl-C keeps every completed document.

Example (``Pipeline.ingest(..., engine=RayEngine(...))`` runs this)::

    from conan_rag.rag.distributed import RayEngine
    pipe = Pipeline(load_encoder(), url="http://chroma:8000")
    pipe.ingest(["corpus/"], engine=RayEngine(address="auto", encoders=8, gpus_per_encoder=1))
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conan_rag.errors import ConanConfigError
from conan_rag.rag import ray_stages
from conan_rag.rag.completion import Completer
from conan_rag.rag.export import CHUNKS, check_export_folder, report_of, write_export
from conan_rag.rag.ingest import Ingest, Plan
from conan_rag.rag.ray_engine import RayEngine, ray_runtime, retryable_errors
from conan_rag.rag.report import IngestInterrupted, IngestReport
from conan_rag.rag.store import TOKEN_ENV

if TYPE_CHECKING:
    import ray.data

    from conan_rag.rag.documents import DocumentLike

logger = logging.getLogger(__name__)


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
        from conan_rag.remote import RemoteEncoder

        if isinstance(ingest.encoder, RemoteEncoder):
            raise ConanConfigError(
                "The Ray ingest embeds with encoder actors that load the model; it cannot use an "
                "encoder served over HTTP (endpoint). Load the model locally, or ingest without "
                "Ray.",
                setting="endpoint",
            )
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
        added: dict[str, bool] = {}  # the first plan's view: a retried document stays "added"
        try:
            plan = self._plan(inputs, prune, added)
            if not plan.todo:  # nothing to embed (a re-run): no Ray needed
                self._execute(None, plan)
            else:
                progress.phase("starting ray", total=1, unit="step")
                with ray_runtime(self.engine) as ray:
                    progress.advance(1)
                    self._attempts(ray, plan, inputs, prune, added)
        except KeyboardInterrupt:
            progress.close()
            self.report.interrupted = True
            raise IngestInterrupted(self.report) from None
        progress.close()
        return self.report

    def _attempts(
        self, ray: Any, plan: Plan, inputs: list[Any], prune: bool, added: dict[str, bool]
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

    def _plan(self, inputs: list[Any], prune: bool, added: dict[str, bool]) -> Plan:
        """Plan (again) from the collection, keeping what earlier attempts wrote."""
        prior = self._reset_report()
        plan = self.ingest.plan(inputs, prune=prune)
        self._carry(prior)
        for key, job in plan.todo.items():
            job.added = added.setdefault(key, job.added)
        return plan

    def _reset_report(self) -> IngestReport:
        """A fresh report for the next plan; returns the one so far."""
        prior = self.ingest.report
        self.ingest.report = IngestReport()
        return prior

    def _carry(self, prior: IngestReport) -> None:
        """Keep what earlier attempts wrote (the new plan sees their documents as unchanged)."""
        report = self.report
        report.added += prior.added
        report.updated += prior.updated
        report.unchanged = max(0, report.unchanged - prior.added - prior.updated)
        report.chunks_embedded += prior.chunks_embedded
        report.chunks_deleted += prior.chunks_deleted
        report.completed += prior.completed

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
                encoding = self.ingest.encoding_of(unit) if isinstance(unit, Path) else ""
                items.append(
                    {"unit": pickle.dumps(unit), "jobs": pickle.dumps(jobs), "encoding": encoding}
                )
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
        logging.getLogger("ray.data").setLevel(logging.ERROR)
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
                compute=ActorPoolStrategy(size=min(engine.encoders, len(items))),
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
            ds = None
            if ray is not None:
                ds = self.dataset(ray, plan)
                ray.data.DataContext.get_current().enable_progress_bars = self.ingest.progress.show
            try:
                manifest = write_export(ds, self.to_parquet, self.ingest.encoder, plan, self.name)
            except BaseException:
                shutil.rmtree(self.to_parquet / CHUNKS, ignore_errors=True)  # ours: it was empty
                raise
            self.ingest.report = report_of(manifest, self.report)
            return
        progress = self.ingest.progress
        completer = Completer(self.ingest.collection, self.ingest.write_batch, self.report)
        if ray is not None:
            ds = self.dataset(ray, plan)
            if self.url is not None:
                ds = self._write_stage(ds)
            progress.phase("embedding", total=sum(j.chars for j in plan.todo.values()), unit="char")
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    if self.url is None:
                        batch = ray_stages.write_rows(
                            self.ingest.collection, batch, self.ingest.write_batch
                        )
                    written = completer.tally(batch)
                    progress.advance(int(batch["chars"].sum()), chunks=written)
            finally:  # also on Ctrl-C or a lost actor: documents fully written stay complete
                completer.flush()
        completer.delete(plan.deletions)  # emptied and pruned documents, once all else is done
