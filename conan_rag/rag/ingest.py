"""Single-process ingest: paths and documents → chunks → vectors → a Chroma collection.

Incremental, streaming and resumable, without any marker file:

* **Check.** Every document is read once and hashed (text, title, metadata, chunking
  settings). It is *unchanged* only when exactly its expected chunks are stored with that hash;
  chunk 0 records how many chunks the document has, and chunk 0 is written last.
* **Embed.** Documents to (re)embed are read again and cut window by window; chunks go to the
  model in groups of about one token budget, and a writer thread upserts each group while the
  next is being cut. Memory stays bounded whatever the size of a file or of the input.
* **Complete.** After all other chunks of a document are written, its chunk 0 is written (with
  the count), then its stale chunks are deleted. A run killed at any point leaves documents that
  the next run sees as incomplete and finishes; already written chunks are not embedded again.
* **Prune** (optional) deletes stored documents that this run could check are gone: a file named
  or found under a walked folder that no longer exists, or a document no longer in a file (or a
  group of in-memory documents) that was read completely. Documents of files that could not be
  read, of folders that could not be listed, or outside the named paths are never deleted.

Ctrl-C (``KeyboardInterrupt``) lets the group in flight finish and be written, then raises
:class:`IngestInterrupted`, which carries the report of what was committed.

Example:
    >>> import tempfile
    >>> from conan_rag import load_encoder
    >>> from conan_rag.rag.chunking import Chunker
    >>> from conan_rag.rag.documents import Document
    >>> from conan_rag.rag.store import open_client, open_collection
    >>> encoder = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    >>> collection = open_collection(open_client(tempfile.mkdtemp()), "docs", encoder)
    >>> ingest = Ingest(collection, encoder, Chunker(encoder))
    >>> ingest.run([Document("paris", "Paris is the capital of France.", "facts")]).added
    1
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conan_rag.errors import InputPathError, LoaderError
from conan_rag.rag.chunking import Chunk, Chunker, Digest, text_bytes
from conan_rag.rag.decoding import DecodingError, redetect
from conan_rag.rag.discovery import Discovery, discover
from conan_rag.rag.documents import BLOCK_CHARS, DocumentLike, TextFile, read_file
from conan_rag.rag.progress import Progress
from conan_rag.rag.report import IngestInterrupted, IngestReport
from conan_rag.rag.store import iter_metadatas
from conan_rag.rag.writer import Group, Writer

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from conan_rag.protocols import EncoderLike

logger = logging.getLogger(__name__)

Unit = Path | DocumentLike  # a file to read, or one in-memory document


@dataclass
class _Stored:
    """What the collection holds for one document."""

    ids: dict[str, str] = field(default_factory=dict)  # chunk id -> document hash
    n_chunks: int | None = None  # recorded on chunk 0 once the document is complete
    source: str = ""

    def complete(self, digest: str) -> bool:
        return (
            self.n_chunks == len(self.ids)
            and bool(self.ids)
            and all(h == digest for h in self.ids.values())
        )


@dataclass
class _Todo:
    """A document to embed: its hash, length and source, and what is stored of it."""

    digest: str
    chars: int
    source: str
    have: dict[str, str]
    added: bool


def _scalar_metadata(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool))}


def _source_of(unit: Unit) -> str:
    return str(unit) if isinstance(unit, Path) else unit.source


class _Hashing:
    """A document whose blocks also feed a hash (to see it did not change between reads)."""

    def __init__(self, document: DocumentLike, chunker: Chunker) -> None:
        self.document = document
        self.hasher = chunker.start_digest(document)
        self.doc_id, self.source, self.key = document.doc_id, document.source, document.key
        self.title, self.metadata = document.title, document.metadata

    def blocks(self, size: int = BLOCK_CHARS) -> Iterator[str]:
        for block in self.document.blocks(size):
            self.hasher.update(text_bytes(block))
            yield block


class Ingest:
    """One ingest run into a collection (see the module docstring for what it guarantees).

    Args:
        collection: the Chroma collection (already checked against ``encoder``).
        encoder: the encoder the collection records.
        chunker: cuts documents for ``encoder``.
        write_batch: most records per Chroma write.
        progress: reports phases and advances (default: silent).
    """

    def __init__(
        self,
        collection: Collection,
        encoder: EncoderLike,
        chunker: Chunker,
        *,
        write_batch: int = 1000,
        progress: Progress | None = None,
    ) -> None:
        self.collection = collection
        self.encoder = encoder
        self.chunker = chunker
        self.write_batch = max(1, write_batch)
        self.progress = progress or Progress()
        self.report = IngestReport()
        # A group holds about one token budget of chunks (one model batch), capped by the store.
        self.group_tokens = encoder.token_budget
        self.group_rows = min(self.write_batch, encoder.config.max_batch_size)
        self._seen: set[str] = set()  # document keys found this run
        self._encodings: dict[Path, str] = {}  # text files whose encoding was re-detected

    # -- the run ------------------------------------------------------------------------------
    def run(
        self, inputs: Iterable[str | Path | DocumentLike], *, prune: bool = False
    ) -> IngestReport:
        """Ingest files, folders and documents; with ``prune``, also delete what is gone.

        Raises:
            InputPathError: a named path does not exist (nothing is read, written or deleted).
            IngestInterrupted: Ctrl-C; its ``report`` says what was committed.
        """
        writer: Writer | None = None
        try:
            units, found = self._scan(inputs)
            stored = self._stored()
            todo, deletions, read = self._check(units, stored)
            if prune:
                deletions += self._prune(stored, read, found)
            writer = Writer(
                self.collection, self.encoder, self.report, self.progress, self.write_batch
            )
            self._embed(units, todo, writer, deletions)
            writer.close()
        except KeyboardInterrupt:
            if writer is not None:
                writer.close(drop_pending=True)
            self.progress.close()
            self.report.interrupted = True
            raise IngestInterrupted(self.report) from None
        except BaseException:
            if writer is not None:
                writer.close(drop_pending=True)
            self.progress.close()
            raise
        self.progress.close()
        return self.report

    def _scan(self, inputs: Iterable[str | Path | DocumentLike]) -> tuple[list[Unit], Discovery]:
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
        self.progress.advance(len(found.files))
        return [*found.files, *units], found

    def _stored(self) -> dict[str, _Stored]:
        stored: dict[str, _Stored] = {}
        for chunk_id, meta in iter_metadatas(self.collection):
            entry = stored.setdefault(str(meta.get("doc_key", "")), _Stored())
            entry.ids[chunk_id] = str(meta.get("doc_hash", ""))
            entry.source = str(meta.get("source", ""))
            if meta.get("chunk_index") == 0 and isinstance(meta.get("n_chunks"), int):
                entry.n_chunks = int(meta["n_chunks"])
        return stored

    # -- phase 2: what changed ----------------------------------------------------------------
    def _documents(self, unit: Unit) -> Iterator[DocumentLike]:
        if not isinstance(unit, Path):
            yield unit
            return
        for doc in read_file(unit):
            encoding = self._encodings.get(unit)
            if encoding is not None and isinstance(doc, TextFile):
                doc = TextFile(doc.path, encoding, doc.title, doc.metadata)
            yield doc

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

    def _check(
        self, units: list[Unit], stored: dict[str, _Stored]
    ) -> tuple[dict[str, _Todo], list[str], set[str]]:
        report = self.report
        self.progress.phase("checking", total=len(units), unit="file")
        todo: dict[str, _Todo] = {}
        deletions: list[str] = []
        read: set[str] = set()  # sources read completely this run
        for unit in units:
            try:  # only keys and digests are kept: a big file's documents are not held
                digests = [(d.key, d.source, self._digest(d)) for d in self._documents(unit)]
            except LoaderError as exc:
                report.skipped.append((_source_of(unit), exc.reason))
                logger.warning("Skipping %s", exc)
                self.progress.advance()
                continue
            read.add(_source_of(unit))
            for key, source, digest in digests:
                if key in self._seen:
                    logger.warning("Duplicate document %s: keeping the first one", key)
                    continue
                self._seen.add(key)
                report.documents += 1
                entry = stored.get(key)
                if digest.blank:
                    report.note_empty(key)
                    if entry is not None:
                        deletions.extend(entry.ids)
                elif entry is not None and entry.complete(digest.hash):
                    report.unchanged += 1
                else:
                    have = entry.ids if entry is not None else {}
                    todo[key] = _Todo(digest.hash, digest.chars, source, have, entry is None)
            self.progress.advance()
        return todo, deletions, read

    def _prune(self, stored: dict[str, _Stored], read: set[str], found: Discovery) -> list[str]:
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

    # -- phase 3: embed and write -------------------------------------------------------------
    def _embed(
        self, units: list[Unit], todo: dict[str, _Todo], writer: Writer, deletions: list[str]
    ) -> None:
        self.progress.phase("embedding", total=sum(t.chars for t in todo.values()), unit="char")
        group = Group()
        pending = dict(todo)
        sources = {job.source for job in todo.values()}
        for unit in units:
            if not pending:
                break
            if isinstance(unit, Path) and str(unit) not in sources:
                continue
            try:
                for doc in self._documents(unit):
                    job = pending.pop(doc.key, None)
                    if job is not None:
                        group = self._embed_document(doc, job, group, writer)
            except LoaderError as exc:  # the file changed or vanished since it was checked
                self.report.skipped.append((_source_of(unit), exc.reason))
        group.deletions.extend(deletions)
        writer.put(group)

    def _embed_document(self, doc: DocumentLike, job: _Todo, group: Group, writer: Writer) -> Group:
        base = {
            **_scalar_metadata(doc.metadata),
            "source": doc.source,
            "doc_id": doc.doc_id,
            "doc_key": doc.key,
            "title": doc.title,
            "doc_hash": job.digest,
        }
        hashing = _Hashing(doc, self.chunker)
        first: tuple[Chunk, dict[str, Any]] | None = None
        expected: set[str] = set()
        done_chars = 0
        for chunk in self.chunker.iter_chunks(hashing):
            expected.add(chunk.id)
            meta = {
                **base,
                "chunk_index": chunk.index,
                "char_start": chunk.char_start,
                "char_end": chunk.char_end,
            }
            advance = max(0, chunk.char_end - done_chars)
            done_chars = max(done_chars, chunk.char_end)
            group.chars += advance
            if chunk.index == 0:
                first = (chunk, meta)
            elif job.have.get(chunk.id) != job.digest:
                group.add(chunk, meta)
            if group.tokens >= self.group_tokens or len(group.records) >= self.group_rows:
                writer.put(group)
                group = Group()
        group.chars += max(0, job.chars - done_chars)
        if hashing.hasher.hexdigest()[:32] != job.digest:
            self.report.skipped.append((doc.key, "changed while being ingested; run again"))
            return group
        if first is not None and job.have.get(first[0].id) != job.digest:
            first[1]["n_chunks"] = len(expected)
            group.completions.append(first)
        group.deletions.extend(i for i in job.have if i not in expected)
        if job.added:
            self.report.added += 1
        else:
            self.report.updated += 1
        return group
