"""The per-document row stream every engine runs: cut documents into rows, embed the rows.

Both engines (:mod:`~conan_rag.rag.ingest.local` in this process, :mod:`~conan_rag.rag.ingest.ray`
on Ray workers) turn the plan's :class:`~conan_rag.rag.ingest.planning.WorkItem` objects into
column batches (``dict`` of numpy arrays) with :func:`cut_item`, embed them with
:func:`embed_rows`, hand them to a sink (:mod:`~conan_rag.rag.ingest.sink`) and count the
written rows per document (:class:`~conan_rag.rag.ingest.sink.Completer`). Rows have these
columns:

========== ========================================================================
``kind``   ``chunk`` (embed and write), ``first`` (a document's chunk 0: embed, write, then
           complete), ``done`` (a document with nothing new to embed: complete only), ``skip``
           (a file or document that could not be read or changed; ``text`` says why)
``id``     the chunk id (chunk 0's for ``first``/``done``)
``text``   the chunk text stored in Chroma (for ``skip``: the reason)
``embed``  the text embedded (the title prefix included)
``meta``   the chunk's metadata as JSON (chunk 0's includes ``n_chunks``)
``key``    the document key (for ``skip``: the source)
``n``      the document's chunk count (``first``/``done``), else 0
``parts``  how many ``chunk`` rows the document has in this run (``first``/``done``), else 0
``stale``  JSON list of stored chunk ids of the document to delete once it is complete
``chars``  characters of text the row accounts for (progress)
``added``  the document was not stored before (``first``/``done``)
``vector`` float32 vector (added by :class:`EmbedChunks`; zeros for rows not embedded)
========== ========================================================================

Example:
    >>> rows = Rows()
    >>> rows.skip("a.txt", "cannot read it")
    >>> batch = rows.batch()
    >>> batch["kind"].tolist(), batch["text"].tolist()
    (['skip'], ['cannot read it'])
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from conan_rag.errors import LoaderError
from conan_rag.rag.ingest.planning import Cut, Job, WorkItem, cut_document, documents_of, source_of

if TYPE_CHECKING:
    from conan_rag.protocols import EncoderLike
    from conan_rag.rag.chunking import Chunker
    from conan_rag.rag.sources import DocumentLike

Batch = dict[str, np.ndarray]
COLUMNS = ("kind", "id", "text", "embed", "meta", "key", "n", "parts", "stale", "chars", "added")
EMBEDDED = ("chunk", "first")  # kinds that carry a vector
ROWS_PER_BATCH = 256  # rows a batch holds at most (by default)
__all__ = [
    "COLUMNS",
    "EMBEDDED",
    "Batch",
    "Limits",
    "Rows",
    "cut_item",
    "cut_units",
    "embed_rows",
    "summary",
]


class Rows:
    """Rows being collected into a column batch."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self.tokens = 0  # about how many tokens the rows to embed hold

    def __len__(self) -> int:
        return len(self.columns["kind"])

    def add(
        self,
        kind: str,
        chunk_id: str,
        text: str,
        embed: str,
        meta: dict[str, Any],
        key: str,
        *,
        n: int = 0,
        parts: int = 0,
        stale: list[str] | None = None,
        chars: int = 0,
        added: bool = False,
    ) -> None:
        """Append one row."""
        values = (
            kind,
            chunk_id,
            text,
            embed,
            json.dumps(meta, ensure_ascii=False),
            key,
            n,
            parts,
            json.dumps(stale or []),
            chars,
            added,
        )
        for name, value in zip(COLUMNS, values, strict=True):
            self.columns[name].append(value)

    def skip(self, source: str, reason: str) -> None:
        """Append a row saying ``source`` was skipped, and why."""
        self.add("skip", "", reason, "", {}, source)

    def batch(self) -> Batch:
        """The rows as numpy columns (strings as object arrays); the rows are cleared."""
        out: Batch = {}
        for name, values in self.columns.items():
            if name in ("n", "parts", "chars"):
                out[name] = np.asarray(values, dtype=np.int64)
            elif name == "added":
                out[name] = np.asarray(values, dtype=bool)
            else:
                out[name] = np.asarray(values, dtype=object)
        self.columns = {name: [] for name in COLUMNS}
        self.tokens = 0
        return out


class Limits:
    """When a batch of rows is handed on: at ``rows`` rows, or ``tokens`` tokens to embed.

    Args:
        rows: most rows per batch.
        tokens: most tokens to embed per batch (``None``: no limit), so that one batch is
            about one model batch of the encoder's token budget.
    """

    def __init__(self, rows: int = ROWS_PER_BATCH, tokens: int | None = None) -> None:
        self.rows = max(1, rows)
        self.tokens = tokens

    def full(self, rows: Rows) -> bool:
        """The rows make a batch."""
        return len(rows) >= self.rows or (self.tokens is not None and rows.tokens >= self.tokens)


def _cut_one(
    doc: DocumentLike, job: Job, chunker: Chunker, rows: Rows, limits: Limits
) -> Iterator[Batch]:
    """The rows of one document; a batch is yielded whenever ``limits`` says it is full.

    A document's chunk rows may travel in several batches (memory stays bounded whatever its
    size); its last row (``first`` or ``done``) says how many there were. A document whose text
    changed since it was checked gets a ``skip`` row instead and is never completed.
    """
    cut = Cut()
    chars = parts = 0
    for record, advance in cut_document(doc, job, chunker, cut):
        chars += advance
        if record is not None:
            chunk, meta = record
            rows.add("chunk", chunk.id, chunk.text, chunk.embed_text, meta, doc.key, chars=chars)
            rows.tokens += chunk.tokens
            chars, parts = 0, parts + 1
            if limits.full(rows):
                yield rows.batch()
    chars += cut.tail
    if cut.changed:
        rows.skip(doc.key, "changed while being ingested; run again")
        return
    last: dict[str, Any] = {
        "n": cut.chunks,
        "parts": parts,
        "stale": cut.stale,
        "chars": chars,
        "added": job.added,
    }
    if cut.first is not None:
        chunk, meta = cut.first
        rows.add("first", chunk.id, chunk.text, chunk.embed_text, meta, doc.key, **last)
        rows.tokens += chunk.tokens
    else:
        rows.add("done", "", "", "", {}, doc.key, **last)
    if limits.full(rows):
        yield rows.batch()


def cut_item(
    item: WorkItem, chunker: Chunker, limits: Limits | None = None, rows: Rows | None = None
) -> Iterator[Batch]:
    """Read and cut the documents of one work item into row batches (the last may be partial).

    Pass ``rows`` to carry a partial batch over from item to item (the caller flushes it).
    """
    limits = limits or Limits()
    own = rows is None
    rows = Rows() if rows is None else rows
    jobs = dict(item.jobs)
    try:
        for doc in documents_of(item.unit, item.encoding):
            job = jobs.pop(doc.key, None)
            if job is not None:
                yield from _cut_one(doc, job, chunker, rows, limits)
    except LoaderError as exc:  # the file changed or vanished since it was checked
        rows.skip(source_of(item.unit), exc.reason)
    if own and len(rows):
        yield rows.batch()


def cut_units(batch: Batch, chunker: Chunker) -> Iterator[Batch]:
    """Cut a Ray batch of pickled work items (column ``item``) into row batches."""
    rows = Rows()
    limits = Limits()
    for blob in batch["item"]:
        yield from cut_item(pickle.loads(blob), chunker, limits, rows)
    if len(rows):
        yield rows.batch()


def embed_rows(
    encoder: EncoderLike, batch: Batch, progress: Callable[[int], None] | None = None
) -> Batch:
    """The batch with a float32 ``vector`` column (zeros for rows not embedded).

    ``progress`` is called with the number of texts after every model batch.
    """
    mask = np.isin(batch["kind"], EMBEDDED)
    vectors = np.zeros((len(mask), encoder.dim), dtype=np.float32)
    if mask.any():
        texts = [str(t) for t in batch["embed"][mask]]
        vectors[mask] = encoder.encode(texts, kind="document", progress=progress)
    return {**batch, "vector": vectors}


def summary(batch: Batch) -> Batch:
    """The columns the driver needs back from a written batch (no texts, no vectors)."""
    keep = ("kind", "id", "key", "n", "parts", "stale", "chars", "added", "text")
    out = {name: batch[name] for name in keep}
    out["text"] = np.where(batch["kind"] == "skip", batch["text"], "").astype(object)
    return out
