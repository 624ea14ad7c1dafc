"""The ingest's writer: embeds groups of chunks and writes them to Chroma, on its own thread.

Groups are written in the order they are put, each in three steps: its chunks, then the chunk 0
of every document the group completes (so a document is marked complete only after all its other
chunks are stored), then the stale chunks of those documents. At most :data:`QUEUED` groups wait,
so memory is bounded while the caller cuts the next group.

Example:
    >>> group = Group()
    >>> group.tokens, group.empty
    (0, True)
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conan_rag.rag.chunking import Chunk
from conan_rag.runtime.memory import release_free_memory

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.progress import Progress
    from conan_rag.rag.report import IngestReport

QUEUED = 2  # groups cut ahead of the one being embedded
EXIT_WAIT_S = 60.0  # at interpreter exit, the longest to wait for a group in flight
_Record = tuple[Chunk, dict[str, Any]]


@dataclass
class Group:
    """Chunks to embed and write together, and what to delete after them.

    Attributes:
        records: chunks (with metadata) to write.
        completions: chunk 0 of documents this group completes, written after ``records``.
        deletions: chunk ids to delete after both.
        chars: characters of text this group accounts for (for progress).
        tokens: about how many tokens ``records`` hold.
    """

    records: list[_Record] = field(default_factory=list)
    completions: list[_Record] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)
    chars: int = 0
    tokens: int = 0

    def add(self, chunk: Chunk, meta: dict[str, Any]) -> None:
        """Add a chunk to write."""
        self.records.append((chunk, meta))
        self.tokens += chunk.tokens

    @property
    def empty(self) -> bool:
        """Nothing to write, delete or count."""
        return not (self.records or self.completions or self.deletions or self.chars)


class Writer:
    """Embeds and writes groups on a daemon thread, in order.

    Args:
        collection: where to write.
        encoder: embeds the chunks (documents' prompt).
        report: counters updated as groups are written.
        progress: advanced after every model batch.
        write_batch: most records per Chroma call.
    """

    def __init__(
        self,
        collection: Collection,
        encoder: EncoderLike,
        report: IngestReport,
        progress: Progress,
        write_batch: int = 1000,
    ) -> None:
        self.collection = collection
        self.encoder = encoder
        self.report = report
        self.progress = progress
        self.write_batch = write_batch
        self._queue: queue.Queue[Group | None] = queue.Queue(maxsize=QUEUED)
        self._drop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        # Set when the thread ends. Waited on instead of Thread.join: on Python 3.11 a join
        # interrupted by Ctrl-C marks a still-running thread as stopped, so a second join would
        # return at once and the interpreter could exit under a thread inside torch or Chroma.
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conan-rag-writer", daemon=True)
        self._thread.start()
        _WRITERS.add(self)

    def put(self, group: Group) -> None:
        """Queue a group (blocks while :data:`QUEUED` groups wait).

        Raises:
            BaseException: what the writer thread failed with, if it failed.
        """
        if group.empty:
            return
        while True:
            self._raise_error()
            try:
                self._queue.put(group, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self, drop_pending: bool = False) -> None:
        """Write what is queued (or, with ``drop_pending``, only the group in flight), then stop.

        May be called again with ``drop_pending`` while a first close waits (Ctrl-C during the
        final flush): the queued groups are then dropped, and the call still waits for the group
        in flight, so no thread is left running native code when the interpreter exits.

        Raises:
            BaseException: what the writer thread failed with, if it failed.
        """
        if drop_pending:
            self._drop.set()
            while True:  # the queued groups (and maybe an earlier stop signal) go
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)  # room: the queue was just emptied and only we put
        elif not self._closed:
            self._queue.put(None)
        self._closed = True
        self._done.wait()
        if not drop_pending:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._done.set()

    def _serve(self) -> None:
        while True:
            group = self._queue.get()
            if group is None:
                return
            if self._drop.is_set() or self._error is not None:
                continue
            try:
                self._write(group)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc
            release_free_memory()  # keeps a long ingest's memory flat (see runtime.memory)

    def _write(self, group: Group) -> None:
        rows = group.records + group.completions
        if rows:
            done = [0]

            def batch_done(count: int) -> None:  # per model batch: its share of the characters
                done[0] += count
                self.progress.advance(group.chars * count / len(rows))

            vectors = self.encoder.encode(
                [chunk.embed_text for chunk, _ in rows], kind="document", progress=batch_done
            )
            split = len(group.records)
            self._upsert(group.records, vectors[:split])
            self._upsert(group.completions, vectors[split:])
            self.report.chunks_embedded += len(rows)
            self.report.completed += len(group.completions)
            self.progress.advance(0, chunks=len(rows))
        else:
            self.progress.advance(group.chars)
        for start in range(0, len(group.deletions), self.write_batch):
            self.collection.delete(ids=group.deletions[start : start + self.write_batch])
        self.report.chunks_deleted += len(group.deletions)

    def _upsert(self, records: list[_Record], vectors: Any) -> None:
        for start in range(0, len(records), self.write_batch):
            part = records[start : start + self.write_batch]
            self.collection.upsert(
                ids=[chunk.id for chunk, _ in part],
                embeddings=vectors[start : start + self.write_batch],
                documents=[chunk.text for chunk, _ in part],
                metadatas=[meta for _, meta in part],
            )


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _finish_in_flight() -> None:
    """At exit, let a writer finish its group: a daemon thread killed inside torch aborts."""
    for writer in list(_WRITERS):
        writer._drop.set()
        writer._done.wait(EXIT_WAIT_S)
