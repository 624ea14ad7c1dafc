"""Marking documents complete as soon as all their chunks are confirmed written.

In the Ray ingest a document's chunks travel in different batches, through different actors, in
any order. Its last row (``first`` or ``done``, see :mod:`~conan_rag.rag.ray_stages`) says how
many other rows it has (``parts``). :class:`Completer` counts the confirmed writes per document;
once all are in, the document's chunk 0 gets its ``n_chunks`` (which marks it complete) and then
its stale chunks are deleted, in batches. So memory holds only documents in flight, and a run
stopped by Ctrl-C or a lost actor keeps every document it finished.

Example:
    >>> from conan_rag.rag.report import IngestReport
    >>> done = Completer(None, 100, IngestReport())  # nothing to write: no collection needed
    >>> done.pending, done.ready
    (0, 0)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conan_rag.rag.ray_stages import EMBEDDED, Batch, with_retries
from conan_rag.rag.report import IngestReport

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection


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

    Args:
        collection: where the documents are stored (``None``: only counting).
        limit: most records per Chroma call.
        report: counts ``added``/``updated``/``completed``/``chunks_*`` and ``skipped``.
    """

    def __init__(self, collection: Collection | None, limit: int, report: IngestReport) -> None:
        self.collection = collection
        self.limit = limit
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
        if len(self._updates) >= self.limit or len(self._stale) >= self.limit:
            self.flush()
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
        collection = self.collection
        if collection is None:
            return
        while self._updates:
            part, self._updates = self._updates[: self.limit], self._updates[self.limit :]
            update = functools.partial(
                collection.update,
                ids=[i for i, _ in part],
                metadatas=[{"n_chunks": n} for _, n in part],
            )
            with_retries(update, f"completion of {len(part)} documents")
            self.report.completed += len(part)
        self.delete(self._stale)
        self._stale = []

    def delete(self, ids: list[str]) -> None:
        """Delete chunks by id, ``limit`` at a time, with retries."""
        if self.collection is None:
            return
        for start in range(0, len(ids), self.limit):
            part: Any = ids[start : start + self.limit]
            with_retries(
                functools.partial(self.collection.delete, ids=part),
                f"deletion of {len(part)} chunks",
            )
            self.report.chunks_deleted += len(part)
