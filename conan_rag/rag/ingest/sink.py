"""The one write path: every batched write to the vector store goes through a :class:`StoreSink`.

The single-process engine, the Ray engine (from the driver, or from writer actors for a Chroma
server) and ``conan-rag load`` all write through :class:`StoreSink`, which

* marks the collection changed (:meth:`~conan_rag.rag.store.VectorStore.mark_changed`) before
  its first write, so a lexical index synced earlier is re-synced before it answers again, and
  notes every id it touches (:mod:`~conan_rag.rag.search.changes`): once the run finishes, the
  index re-reads those ids only;
* writes in parts no larger than the store's maximum batch, each retried with back-off (every
  write is an idempotent upsert, update or delete of deterministic ids);
* writes a document's chunk 0 without its chunk count: :class:`Completer` adds the count once
  all of the document's other chunks are confirmed written (that marks it complete), and only
  then deletes its stale chunks.

A Parquet export (:mod:`~conan_rag.rag.ingest.export`) is another :class:`Sink`.

Example:
    >>> from conan_rag.rag.ingest.report import IngestReport
    >>> done = Completer(None, IngestReport())  # nothing to write: only counting
    >>> done.pending, done.ready
    (0, 0)
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from conan_rag.rag.ingest.rows import EMBEDDED, Batch, summary
from conan_rag.rag.search.changes import ChangeLog

if TYPE_CHECKING:
    from conan_rag.rag.ingest.report import IngestReport
    from conan_rag.rag.store import VectorStore

logger = logging.getLogger(__name__)
T = TypeVar("T")
WRITE_ATTEMPTS = 5
BACKOFF_S = 0.5
__all__ = ["Completer", "Sink", "StoreSink", "with_retries"]


def with_retries(action: Callable[[], T], what: str, attempts: int = WRITE_ATTEMPTS) -> T:
    """Run a store call, retrying with exponential back-off (the calls are idempotent)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # Chroma and httpx raise many kinds
            if attempt == attempts:
                raise
            wait = BACKOFF_S * 2 ** (attempt - 1)
            logger.warning(
                "%s failed (%s: %s); retrying in %.1fs",
                what,
                type(exc).__name__,
                str(exc)[:200],
                wait,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


class Sink(Protocol):
    """Where an engine's embedded rows go: a vector store, or files to load later."""

    def write(self, batch: Batch) -> Batch:
        """Store the embedded rows of a batch (chunk 0 without its count); return its summary."""
        ...

    def complete(self, counts: Sequence[tuple[str, int]]) -> None:
        """Mark documents complete: give each chunk 0 (by id) its chunk count."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete chunks by id."""
        ...

    def finish(self, report: IngestReport) -> None:
        """The run succeeded: finish what the sink keeps (and complete ``report``)."""
        ...

    def abort(self) -> None:
        """The run failed or was stopped: what was written stays, unfinished work is dropped."""
        ...


class StoreSink:
    """Writes to a vector store in parts under its maximum batch, with retries.

    Args:
        store: the collection.
        limit: most records per call (capped by ``store.max_batch``).
        mark: mark the collection changed before the first write (``False`` for writers on
            Ray workers: the driver's sink marked it before they started).
    """

    def __init__(self, store: VectorStore, limit: int | None = None, *, mark: bool = True) -> None:
        self.store = store
        self.limit = max(1, min(limit or store.max_batch, store.max_batch))
        self._marked = not mark
        self._changes: ChangeLog | None = None

    def mark_changed(self) -> None:
        """Mark the collection changed (once): derived indexes re-sync before they answer."""
        if not self._marked:
            base = with_retries(self.store.version, "reading the collection's version")
            with_retries(self.store.mark_changed, "marking the collection changed")
            self._marked = True
            self._changes = _open_changes(self.store, base)

    def _note(self, ids: Sequence[str], ops: int | None) -> None:
        if self._changes is not None:
            try:
                self._changes.note(ids, ops)
            except sqlite3.Error as exc:  # the index then syncs in full: slower, still right
                logger.info("Cannot note the changed chunks (%s): a full sync follows", exc)
                self._changes = None

    def written_elsewhere(self, ids: Sequence[str]) -> None:
        """Note ids that other processes wrote for this run (Ray writer actors)."""
        self._note(ids, None)

    def shared_spec(self) -> dict[str, Any] | None:
        """The store's spec when other processes may write to it (a server), else ``None``."""
        spec = self.store.spec()
        return spec if spec.get("url") else None

    def _parts(self, count: int) -> list[slice]:
        if count:
            self.mark_changed()
        return [slice(start, start + self.limit) for start in range(0, count, self.limit)]

    def upsert(self, ids: Any, vectors: Any, texts: Any, metas: list[dict[str, Any]]) -> None:
        """Upsert records (ids and texts: sequences or object arrays), ``limit`` at a time."""
        for part in self._parts(len(ids)):
            call = functools.partial(
                self.store.upsert,
                [str(i) for i in ids[part]],
                np.asarray(vectors[part], dtype=np.float32),
                [str(t) for t in texts[part]],
                metas[part],
            )
            with_retries(call, f"upsert of {len(metas[part])} chunks")
            self._note(call.args[0], len(metas[part]))

    def write(self, batch: Batch) -> Batch:
        """Upsert the embedded rows of a batch; a ``first`` row is written without ``n_chunks``."""
        index = np.flatnonzero(np.isin(batch["kind"], EMBEDDED))
        metas = []
        for i in index:
            meta = json.loads(batch["meta"][i])
            meta.pop("n_chunks", None)
            metas.append(meta)
        self.upsert(batch["id"][index], batch["vector"][index], batch["text"][index], metas)
        return summary(batch)

    def complete(self, counts: Sequence[tuple[str, int]]) -> None:
        """Give each chunk 0 its count, ``limit`` at a time."""
        for part in self._parts(len(counts)):
            ids = [i for i, _ in counts[part]]
            metas = [{"n_chunks": n} for _, n in counts[part]]
            call = functools.partial(self.store.update_metadata, ids, metas)
            with_retries(call, f"completion of {len(ids)} documents")
            self._note(ids, len(ids))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete chunks, ``limit`` at a time."""
        for part in self._parts(len(ids)):
            some = list(ids[part])
            with_retries(functools.partial(self.store.delete, some), f"deletion of {len(some)}")
            self._note(some, len(some))

    def finish(self, report: IngestReport) -> None:
        """Close the run's change notes: the lexical index may now apply them by delta."""
        if self._changes is not None:
            try:
                self._changes.close()
            except sqlite3.Error as exc:
                logger.info("Cannot close the changed chunks' notes (%s): a full sync follows", exc)

    def abort(self) -> None:
        """Nothing is kept between writes: every completed document stays complete.

        The change notes stay open but abandoned: the lexical index syncs in full next time,
        without waiting for this run to close.
        """
        if self._changes is not None:
            try:
                self._changes.abandon()
            except sqlite3.Error as exc:  # the writer's pid is checked too
                logger.info("Cannot mark the changed chunks' notes abandoned (%s)", exc)


def _open_changes(store: VectorStore, base: str) -> ChangeLog | None:
    """A change log in the store's lexical index file, when the store has one."""
    path = store.derived_path("lexical")
    if not path.exists():
        return None  # no index yet: the first search builds it in full anyway
    try:
        return ChangeLog(path, store.version().partition(":")[0], base)
    except sqlite3.Error as exc:
        logger.info("No change notes in %s (%s): a full sync follows", path, exc)
        return None


@dataclass
class _Document:
    written: int = 0  # rows of its chunks confirmed written
    parts: int | None = None  # rows of its chunks this run writes (known from its last row)
    first: str = ""  # its chunk 0, when this run wrote it
    count: int = 0
    stale: list[str] = field(default_factory=list)
    added: bool = False


class Completer:
    """Counts written rows per document and completes documents whose rows are all written.

    A document's rows may arrive in any batches, in any order (Ray); its last row says how many
    chunk rows it has. Memory holds only documents in flight, and a run stopped by Ctrl-C or a
    lost worker keeps every document it finished.

    Args:
        sink: where completions and deletions go (``None``: only counting).
        report: counts ``added``/``updated``/``completed``/``chunks_*`` and ``skipped``.
    """

    def __init__(self, sink: Sink | None, report: IngestReport) -> None:
        self.sink = sink
        self.report = report
        self._documents: dict[str, _Document] = {}
        self._updates: list[tuple[str, int]] = []  # (chunk 0 id, count) of ready documents
        self._stale: list[str] = []

    @property
    def pending(self) -> int:
        """Documents with rows still in flight."""
        return len(self._documents)

    @property
    def ready(self) -> int:
        """Documents whose completion is waiting to be written."""
        return len(self._updates)

    def tally(self, batch: Batch) -> int:
        """Count a batch of written rows (summary columns); return the chunks it wrote."""
        report = self.report
        before = report.chunks_embedded
        for kind, chunk_id, key, n, parts, stale, added, text in zip(
            batch["kind"],
            batch["id"],
            batch["key"],
            batch["n"],
            batch["parts"],
            batch["stale"],
            batch["added"],
            batch["text"],
        ):
            if kind == "skip":
                report.skipped.append((str(key), str(text)))
                continue
            if kind in EMBEDDED:
                report.chunks_embedded += 1
            doc = self._documents.setdefault(str(key), _Document())
            if kind == "chunk":
                doc.written += 1
            else:  # the document's last row: "first" (chunk 0, written) or "done"
                doc.parts, doc.count, doc.added = int(parts), int(n), bool(added)
                doc.first = str(chunk_id) if kind == "first" else ""
                doc.stale = json.loads(stale)
            if doc.parts is not None and doc.written >= doc.parts:
                self._finish(str(key))
        return report.chunks_embedded - before

    def _finish(self, key: str) -> None:
        doc = self._documents.pop(key)
        if doc.first:
            self._updates.append((doc.first, doc.count))
        self._stale.extend(doc.stale)
        if doc.added:
            self.report.added += 1
        else:
            self.report.updated += 1

    def flush(self) -> None:
        """Write the completions of ready documents, then delete their stale chunks."""
        updates, self._updates = self._updates, []
        stale, self._stale = self._stale, []
        if self.sink is None:
            return
        self.sink.complete(updates)
        self.report.completed += len(updates)
        self.delete(stale)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete chunks (counted as ``chunks_deleted``)."""
        if self.sink is not None and ids:
            self.sink.delete(ids)
            self.report.chunks_deleted += len(ids)
