"""What an ingest plans, shared by every engine: stored state, jobs, and cutting one document.

Every engine (:mod:`~conan_rag.rag.ingest.local`, :mod:`~conan_rag.rag.ingest.ray`) starts from
the same :class:`Plan`, made by :class:`Planner`, so all store the same chunk ids, texts and
metadata:

* :class:`StoredDocument` is what a collection holds of one document, and says whether it is
  complete (chunk 0 carries the chunk count, and exactly that many chunks carry the hash).
* :class:`Job` is a document to (re)embed: its hash, and which chunks are already stored.
* :class:`Plan` is the run: the inputs, the jobs, and what to delete; :class:`WorkItem` is one
  input with jobs, as an engine hands it to the row stream (:mod:`~conan_rag.rag.ingest.rows`).
* :func:`cut_document` cuts a document and yields the chunks still to write, with their metadata;
  its :class:`Cut` then holds chunk 0 (written last, with the count) and the stale chunk ids.

Planning reads every input document once (hashing) and the stored metadata of those documents
only (one lookup by document key per :data:`KEYS_PER_LOOKUP` documents), so adding one file
costs that file, whatever the collection's size. With ``prune`` it must also know what is stored
under the given paths: a :class:`StoredKeys` catalog (the lexical index's chunk table, kept in
step by delta) answers that by index lookups; without one, every stored chunk's metadata is read.
Nothing is embedded or written.

Example:
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.chunking import Chunker
    >>> from conan_rag.rag.sources import Document
    >>> chunker = Chunker(load_encoder("sentence-transformers/all-MiniLM-L6-v2"))
    >>> doc = Document("paris", "Paris is the capital of France.", "facts")
    >>> job = Job(chunker.document_hash(doc), 31, "facts", {}, True)
    >>> cut = Cut()
    >>> list(cut_document(doc, job, chunker, cut))  # one chunk: chunk 0, kept for last
    [(None, 31)]
    >>> cut.first[1]["n_chunks"], cut.first[0].text, cut.changed
    (1, 'Paris is the capital of France.', False)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from conan_rag.errors import InputPathError, LoaderError
from conan_rag.rag.chunking import Chunk, Chunker, Digest, text_bytes
from conan_rag.rag.ingest.progress import Progress
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.sources.decoding import DecodingError, redetect
from conan_rag.rag.sources.discovery import Discovery, discover
from conan_rag.rag.sources.documents import BLOCK_CHARS, DocumentLike, TextFile, read_file

if TYPE_CHECKING:
    from conan_rag.rag.store import Records, VectorStore

logger = logging.getLogger(__name__)

Unit = Path | DocumentLike  # a file to read, or one in-memory document
Record = tuple[Chunk, dict[str, Any]]  # a chunk and the metadata stored with it
Input = str | Path | DocumentLike  # what a user passes: a path, or a document
KEYS_PER_LOOKUP = 500  # document keys per metadata lookup while planning
__all__ = [
    "Cut",
    "Input",
    "Job",
    "Plan",
    "Planner",
    "Record",
    "StoredDocument",
    "StoredKeys",
    "Unit",
    "WorkItem",
    "cut_document",
    "documents_of",
    "source_of",
]


@dataclass
class StoredDocument:
    """What the collection holds for one document.

    Attributes:
        ids: chunk id → the document hash that chunk was written with. A chunk 0 written
            without the chunk count (a run stopped before it completed the document) maps to
            ``""``, so it is written again, with the count.
        n_chunks: the count chunk 0 records once the document is complete.
        source: the file (or group of in-memory documents) it came from.
    """

    ids: dict[str, str] = field(default_factory=dict)
    n_chunks: int | None = None
    source: str = ""

    def add(self, chunk_id: str, meta: dict[str, Any]) -> None:
        """Record one stored chunk from its metadata."""
        self.source = str(meta.get("source", ""))
        digest = str(meta.get("doc_hash", ""))
        if meta.get("chunk_index") == 0:
            count = meta.get("n_chunks")
            if isinstance(count, int) and not isinstance(count, bool):
                self.n_chunks = count
            else:
                digest = ""  # not completed: chunk 0 is written again, with the count
        self.ids[chunk_id] = digest

    def complete(self, digest: str) -> bool:
        """All chunks of the document with hash ``digest`` are stored, and nothing else."""
        return (
            self.n_chunks == len(self.ids)
            and bool(self.ids)
            and all(h == digest for h in self.ids.values())
        )


@dataclass
class Job:
    """A document to embed: its hash, length and source, and what is stored of it."""

    digest: str
    chars: int
    source: str
    have: dict[str, str]
    added: bool


@dataclass
class Cut:
    """What cutting one document found, besides the chunks it yielded.

    Attributes:
        first: chunk 0 and its metadata (with ``n_chunks``), when it must be (re)written.
        stale: stored chunk ids of the document that its current text no longer has.
        changed: the text changed since it was checked (nothing of it may be completed).
        chunks: how many chunks the document has.
        tail: characters after the last chunk (for progress).
    """

    first: Record | None = None
    stale: list[str] = field(default_factory=list)
    changed: bool = False
    chunks: int = 0
    tail: int = 0


def scalar_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """The entries Chroma can store (strings, numbers and booleans)."""
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool))}


def source_of(unit: Unit) -> str:
    """The source a unit's documents carry (a file's path, or a document's source)."""
    return str(unit) if isinstance(unit, Path) else unit.source


class Hashing:
    """A document whose blocks also feed a hash (to see it did not change between reads)."""

    def __init__(self, document: DocumentLike, chunker: Chunker) -> None:
        self.document = document
        self.hasher = chunker.start_digest(document)
        self.doc_id, self.source, self.key = document.doc_id, document.source, document.key
        self.title, self.metadata = document.title, document.metadata

    def blocks(self, size: int = BLOCK_CHARS) -> Iterator[str]:
        """The document's blocks, each fed to the hash as it passes."""
        for block in self.document.blocks(size):
            self.hasher.update(text_bytes(block))
            yield block


def base_metadata(doc: DocumentLike, digest: str) -> dict[str, Any]:
    """The metadata every chunk of a document carries."""
    return {
        **scalar_metadata(doc.metadata),
        "source": doc.source,
        "doc_id": doc.doc_id,
        "doc_key": doc.key,
        "title": doc.title,
        "doc_hash": digest,
    }


def cut_document(
    doc: DocumentLike, job: Job, chunker: Chunker, cut: Cut
) -> Iterator[tuple[Record | None, int]]:
    """Cut a document, yielding ``(record, chars)`` per chunk; ``record`` is ``None`` if stored.

    Chunk 0 is never yielded as a record: when it must be written, it is left in ``cut.first``
    with the chunk count, to be written after all the others. ``chars`` is how far the chunk
    advances through the text (for progress; ``cut.tail`` has the rest). Once the generator is
    exhausted, ``cut`` holds what else was found.
    """
    base = base_metadata(doc, job.digest)
    hashing = Hashing(doc, chunker)
    expected: set[str] = set()
    done_chars = 0
    first: Record | None = None
    for chunk in chunker.iter_chunks(hashing):
        expected.add(chunk.id)
        meta = {
            **base,
            "chunk_index": chunk.index,
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
        }
        advance = max(0, chunk.char_end - done_chars)
        done_chars = max(done_chars, chunk.char_end)
        if chunk.index == 0:
            first = (chunk, meta)  # written last, once the others are stored
            yield None, advance
        elif job.have.get(chunk.id) != job.digest:
            yield (chunk, meta), advance
        else:
            yield None, advance
    cut.chunks = len(expected)
    cut.tail = max(0, job.chars - done_chars)
    cut.changed = hashing.hasher.hexdigest()[:32] != job.digest
    if cut.changed:
        return
    if first is not None and job.have.get(first[0].id) != job.digest:
        first[1]["n_chunks"] = len(expected)
        cut.first = first
    cut.stale = [i for i in job.have if i not in expected]


def _add_records(stored: dict[str, StoredDocument], records: Records) -> None:
    for chunk_id, meta in zip(records.ids, records.metadatas or [], strict=True):
        stored.setdefault(str(meta.get("doc_key", "")), StoredDocument()).add(chunk_id, meta)


def documents_of(unit: Unit, encoding: str = "") -> Iterator[DocumentLike]:
    """The documents of a unit: a file's (read with ``encoding`` when the check set one)."""
    if not isinstance(unit, Path):
        yield unit
        return
    for doc in read_file(unit):
        if encoding and isinstance(doc, TextFile):
            doc = TextFile(doc.path, encoding, doc.title, doc.metadata)
        yield doc


@dataclass
class WorkItem:
    """One input with documents to embed, as the row stream takes it (picklable, for Ray).

    Attributes:
        unit: the file or in-memory document.
        jobs: document key → its job.
        encoding: the text encoding the check settled on ("" when the file's start said it).
    """

    unit: Unit
    jobs: dict[str, Job]
    encoding: str = ""


@dataclass
class Plan:
    """What a run will do, worked out before anything is embedded.

    Attributes:
        units: files and in-memory documents, in input order.
        todo: document key → the job of embedding it.
        deletions: chunk ids to delete (empty documents' chunks, and what pruning removes).
        encodings: text files whose encoding the check re-detected.
    """

    units: list[Unit]
    todo: dict[str, Job]
    deletions: list[str]
    encodings: dict[Path, str] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        """Characters of text to embed (the embedding phase's total)."""
        return sum(job.chars for job in self.todo.values())

    def items(self) -> Iterator[WorkItem]:
        """One item per input with something to embed, in input order, made as they are taken.

        A generator: an engine holds only the items in flight, not one per input file (issue
        23: 20,000 small files made 20,000 items, each with its own copy of its jobs, that
        lived until the last one was embedded).
        """
        by_source: dict[str, dict[str, Job]] = {}
        for key, job in self.todo.items():
            by_source.setdefault(job.source, {})[key] = job
        for unit in self.units:
            if isinstance(unit, Path):
                jobs = by_source.get(str(unit), {})
            else:
                found = self.todo.get(unit.key)
                jobs = {unit.key: found} if found and found.source == unit.source else {}
            if jobs:
                encoding = self.encodings.get(unit, "") if isinstance(unit, Path) else ""
                yield WorkItem(unit, dict(jobs), encoding)


@runtime_checkable
class StoredKeys(Protocol):
    """A catalog of what a collection stores, in step with it (see :meth:`keys_under`)."""

    def keys_under(self, sources: Iterable[str], folders: Iterable[str | Path]) -> list[str]:
        """Document keys stored with one of ``sources`` or a source under one of ``folders``."""
        ...


class Planner:
    """Scans the inputs and diffs them against the store: what every engine runs first.

    Args:
        store: the collection (read: every stored chunk's metadata).
        chunker: cuts and hashes documents.
        report: counters the plan fills in (files, documents, unchanged, skipped...).
        progress: the scanning and checking phases.
        catalog: what the store holds, in step with it; lets ``prune`` skip the full read.
    """

    def __init__(
        self,
        store: VectorStore,
        chunker: Chunker,
        report: IngestReport,
        progress: Progress,
        catalog: StoredKeys | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.chunker = chunker
        self.report = report
        self.progress = progress
        self._seen: set[str] = set()  # document keys found this run
        self._encodings: dict[Path, str] = {}  # text files whose encoding was re-detected

    def plan(self, inputs: Iterable[Input], *, prune: bool = False) -> Plan:
        """Scan the inputs and diff them against the collection.

        Raises:
            InputPathError: a named path does not exist (nothing is read, written or deleted).
        """
        self._seen.clear()  # a plan may be made again (the Ray engine re-plans after a loss)
        units, found = self._scan(inputs)
        digests, read = self._read(units)
        keys = [key for found_ in digests for key, _, _ in found_]
        if prune and self.catalog is None:  # what is stored under the paths: read every chunk
            stored = self._stored()
        elif prune:  # the catalog names what is stored under the paths: O(those chunks)
            assert self.catalog is not None
            keys += self.catalog.keys_under(read, found.folders)
            stored = self._stored_for(keys)
        else:  # only the stored state of the documents given: O(their chunks)
            stored = self._stored_for(keys)
        todo, deletions = self._check(digests, stored)
        if prune:
            deletions += self._prune(stored, read, found)
        return Plan(units, todo, deletions, dict(self._encodings))

    def _scan(self, inputs: Iterable[Input]) -> tuple[list[Unit], Discovery]:
        paths: list[str | Path] = []
        units: list[Unit] = []
        for item in inputs:
            if isinstance(item, (str, Path)):
                paths.append(item)
            else:
                units.append(item)
        self.progress.phase("scanning", unit="file")
        found = discover(paths)
        if found.missing:
            raise InputPathError(found.missing)
        report = self.report
        report.files = len(found.files)
        report.unsupported = dict(found.unsupported)
        report.hidden = found.hidden
        report.skipped.extend((path, f"cannot list it ({why})") for path, why in found.unreadable)
        report.skipped.extend(found.skipped)
        self.progress.advance(len(found.files))
        return [*found.files, *units], found

    def _stored(self) -> dict[str, StoredDocument]:
        """Every stored document (reads every chunk's metadata)."""
        stored: dict[str, StoredDocument] = {}
        for records in self.store.scan(("metadatas",)):
            _add_records(stored, records)
        return stored

    def _stored_for(self, keys: list[str]) -> dict[str, StoredDocument]:
        """The stored state of these documents only (reads their chunks' metadata)."""
        stored: dict[str, StoredDocument] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), KEYS_PER_LOOKUP):
            part = unique[start : start + KEYS_PER_LOOKUP]
            _add_records(stored, self.store.find({"doc_key": {"$in": part}}))
        return stored

    def _digest(self, doc: DocumentLike) -> Digest:
        """The digest of a document.

        A text file whose later part is not in the encoding its start suggested is re-detected
        once (and read with that encoding from then on).
        """
        try:
            return self.chunker.digest(doc)
        except DecodingError as exc:
            encoding = redetect(doc.path, exc) if isinstance(doc, TextFile) else None
            if encoding is None or not isinstance(doc, TextFile):
                raise
            self._encodings[doc.path] = encoding
            return self.chunker.digest(TextFile(doc.path, encoding, doc.title, doc.metadata))

    def _digests(self, unit: Unit) -> list[tuple[str, str, Digest]]:
        """Keys, sources and digests of a unit's documents (a big file's are not held)."""
        out = []
        for doc in documents_of(unit):
            encoding = self._encodings.get(doc.path) if isinstance(doc, TextFile) else None
            if encoding is not None and isinstance(doc, TextFile):
                doc = TextFile(doc.path, encoding, doc.title, doc.metadata)
            out.append((doc.key, doc.source, self._digest(doc)))
        return out

    def _read(self, units: list[Unit]) -> tuple[list[list[tuple[str, str, Digest]]], set[str]]:
        """Every unit's documents hashed (keys, sources, digests), and the sources read whole."""
        self.progress.phase("checking", total=len(units), unit="file")
        out: list[list[tuple[str, str, Digest]]] = []
        read: set[str] = set()  # sources read completely this run
        for unit in units:
            try:
                out.append(self._digests(unit))
                read.add(source_of(unit))
            except LoaderError as exc:
                self.report.skipped.append((source_of(unit), exc.reason))
                logger.info("Skipping %s", exc)  # the report lists it: one line per skip
            self.progress.advance()
        return out, read

    def _check(
        self, digests: list[list[tuple[str, str, Digest]]], stored: dict[str, StoredDocument]
    ) -> tuple[dict[str, Job], list[str]]:
        todo: dict[str, Job] = {}
        deletions: list[str] = []
        for found in digests:
            for key, source, digest in found:
                self._check_one(key, source, digest, stored.get(key), todo, deletions)
        return todo, deletions

    def _check_one(
        self,
        key: str,
        source: str,
        digest: Digest,
        entry: StoredDocument | None,
        todo: dict[str, Job],
        deletions: list[str],
    ) -> None:
        if key in self._seen:
            logger.warning("Duplicate document %s: keeping the first one", key)
            return
        self._seen.add(key)
        report = self.report
        report.documents += 1
        if digest.blank:
            report.note_empty(key)
            if entry is not None:
                deletions.extend(entry.ids)
        elif entry is not None and entry.complete(digest.hash):
            report.unchanged += 1
        else:
            have = entry.ids if entry is not None else {}
            todo[key] = Job(digest.hash, digest.chars, source, have, entry is None)

    def _prune(
        self, stored: dict[str, StoredDocument], read: set[str], found: Discovery
    ) -> list[str]:
        """Chunks of stored documents this run could check are gone."""
        gone: list[str] = []
        for key, entry in stored.items():
            if key in self._seen:
                continue
            source = entry.source
            vanished = found.covers(source) and not Path(source).exists()
            if source in read or vanished:
                self.report.deleted += 1
                gone.extend(entry.ids)
        return gone
