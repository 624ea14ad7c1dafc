"""The stages of the Ray ingest, run on Ray workers: cut, embed, write.

Each stage is a plain function or class over column batches (``dict`` of numpy arrays), so it is
testable without Ray. Rows flow through the stages with these columns:

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

import functools
import json
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from conan_rag.errors import LoaderError
from conan_rag.rag.documents import DocumentLike, TextFile, read_file
from conan_rag.rag.plan import Cut, Job, cut_document

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from conan_rag.rag.chunking import Chunker

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
T = TypeVar("T")
COLUMNS = ("kind", "id", "text", "embed", "meta", "key", "n", "parts", "stale", "chars", "added")
EMBEDDED = ("chunk", "first")  # kinds that carry a vector
ROWS_PER_BATCH = 256  # rows a cut task yields at a time
WRITE_ATTEMPTS = 5
BACKOFF_S = 0.5


class Rows:
    """Rows being collected into a column batch."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}

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
        return out


# -- stage 1: read and cut (Ray tasks) --------------------------------------------------------
def _documents(unit: Path | DocumentLike, encoding: str) -> Iterator[DocumentLike]:
    if not isinstance(unit, Path):
        yield unit
        return
    for doc in read_file(unit):
        if encoding and isinstance(doc, TextFile):
            doc = TextFile(doc.path, encoding, doc.title, doc.metadata)
        yield doc


def _cut_one(doc: DocumentLike, job: Job, chunker: Chunker, rows: Rows) -> Iterator[Batch]:
    pending = Rows()  # this document's rows: dropped whole if its text changed meanwhile
    cut = Cut()
    chars = 0
    for record, advance in cut_document(doc, job, chunker, cut):
        chars += advance
        if record is not None:
            chunk, meta = record
            pending.add("chunk", chunk.id, chunk.text, chunk.embed_text, meta, doc.key, chars=chars)
            chars = 0
    chars += cut.tail
    if cut.changed:
        rows.skip(doc.key, "changed while being ingested; run again")
        return
    parts = len(pending)
    for name, values in pending.columns.items():
        rows.columns[name].extend(values)
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
    else:
        rows.add("done", "", "", "", {}, doc.key, **last)
    if len(rows) >= ROWS_PER_BATCH:
        yield rows.batch()


def cut_units(batch: Batch, chunker: Chunker) -> Iterator[Batch]:
    """Read and cut the units of a batch (columns ``unit``, ``jobs``, ``encoding``).

    ``unit`` is a pickled file path or document, ``jobs`` a pickled ``{key: Job}`` of the
    documents to embed from it, ``encoding`` the text encoding the driver settled on (or "").
    """
    rows = Rows()
    for blob, jobs_blob, encoding in zip(batch["unit"], batch["jobs"], batch["encoding"]):
        unit = pickle.loads(blob)
        jobs: dict[str, Job] = pickle.loads(jobs_blob)
        try:
            for doc in _documents(unit, str(encoding)):
                job = jobs.pop(doc.key, None)
                if job is not None:
                    yield from _cut_one(doc, job, chunker, rows)
        except LoaderError as exc:  # the file changed or vanished since it was checked
            rows.skip(str(unit) if isinstance(unit, Path) else unit.source, exc.reason)
    if len(rows):
        yield rows.batch()


# -- stage 2: embed (an actor pool: one encoder per actor) ------------------------------------
class EmbedChunks:
    """Embeds the ``chunk`` and ``first`` rows of a batch with the shared encoder of its process.

    Args:
        config: the encoder's config (:meth:`EncoderConfig.to_dict`).
        fingerprint: the driver's model fingerprint; a worker whose model files differ refuses.
        threads: torch threads for this actor (``None``: what Ray set, one per CPU it reserved).
    """

    def __init__(self, config: dict[str, Any], fingerprint: str, threads: int | None) -> None:
        import torch

        from conan_rag.config import EncoderConfig
        from conan_rag.errors import CollectionMismatchError
        from conan_rag.registry import load_encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_encoder(config=EncoderConfig.from_dict(config))
        if self.encoder.fingerprint != fingerprint:
            raise CollectionMismatchError(
                f"The model files on this Ray worker (fingerprint {self.encoder.fingerprint[:12]}"
                f") differ from the driver's ({fingerprint[:12]}); install the same model "
                "revision on every node.",
                collection=None,
                recorded_model=config.get("model"),
                offered_model=self.encoder.model_id,
            )

    def __call__(self, batch: Batch) -> Batch:
        """The batch with a ``vector`` column."""
        mask = np.isin(batch["kind"], EMBEDDED)
        vectors = np.zeros((len(mask), self.encoder.dim), dtype=np.float32)
        if mask.any():
            texts = [str(t) for t in batch["embed"][mask]]
            vectors[mask] = self.encoder.encode(texts, kind="document")
        return {**batch, "vector": vectors}


# -- stage 3: write (the driver for an embedded store; an actor pool for a server) -----------
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


def summary(batch: Batch) -> Batch:
    """The columns the driver needs back from a written batch (no texts, no vectors)."""
    keep = ("kind", "id", "key", "n", "parts", "stale", "chars", "added", "text")
    out = {name: batch[name] for name in keep}
    out["text"] = np.where(batch["kind"] == "skip", batch["text"], "").astype(object)
    return out


def upsert_records(
    collection: Any, ids: Any, vectors: Any, texts: Any, metas: list[dict[str, Any]], limit: int
) -> None:
    """Upsert records ``limit`` at a time, each call retried with back-off (it is idempotent)."""
    for start in range(0, len(ids), limit):
        part = slice(start, start + limit)
        call = functools.partial(
            collection.upsert,
            ids=[str(i) for i in ids[part]],
            embeddings=np.asarray(vectors[part], dtype=np.float32),
            documents=[str(t) for t in texts[part]],
            metadatas=metas[part],
        )
        with_retries(call, f"upsert of {len(metas[part])} chunks")


def write_rows(collection: Collection, batch: Batch, limit: int) -> Batch:
    """Upsert the embedded rows of a batch, ``limit`` records per call; return its summary.

    A ``first`` row (chunk 0) is written without ``n_chunks``: the driver adds the count once all
    of the document's chunks are stored, which marks the document complete.
    """
    index = np.flatnonzero(np.isin(batch["kind"], EMBEDDED))
    metas = []
    for i in index:
        meta = json.loads(batch["meta"][i])
        meta.pop("n_chunks", None)
        metas.append(meta)
    upsert_records(
        collection, batch["id"][index], batch["vector"][index], batch["text"][index], metas, limit
    )
    return summary(batch)


class WriteChroma:
    """Writes batches to a collection on a Chroma server (token from the environment).

    Args:
        url: ``http://HOST:PORT`` of the server.
        collection: the collection's name (it exists: the driver created and checked it).
        limit: most records per upsert.
    """

    def __init__(self, url: str, collection: str, limit: int) -> None:
        from conan_rag.rag.store import open_client

        client = open_client(url=url)
        self.collection = client.get_collection(collection, embedding_function=None)
        self.limit = limit

    def __call__(self, batch: Batch) -> Batch:
        """Write the batch; return its summary."""
        return write_rows(self.collection, batch, self.limit)
