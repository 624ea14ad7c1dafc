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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conan_rag.errors import InputPathError, LoaderError
from conan_rag.rag.chunking import Chunker, Digest
from conan_rag.rag.decoding import DecodingError, redetect
from conan_rag.rag.discovery import Discovery, discover
from conan_rag.rag.documents import DocumentLike, TextFile, read_file
from conan_rag.rag.plan import Cut, Job, StoredDocument, Unit, cut_document, source_of
from conan_rag.rag.progress import Progress
from conan_rag.rag.report import IngestInterrupted, IngestReport
from conan_rag.rag.store import iter_metadatas
from conan_rag.rag.writer import Group, Writer

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from conan_rag.protocols import EncoderLike

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a run will do, worked out before anything is embedded.

    Attributes:
        units: files and in-memory documents, in input order.
        todo: document key → the job of embedding it.
        deletions: chunk ids to delete (empty documents' chunks, and what pruning removes).
    """

    units: list[Unit]
    todo: dict[str, Job]
    deletions: list[str]


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
            plan = self.plan(inputs, prune=prune)
            writer = Writer(
                self.collection, self.encoder, self.report, self.progress, self.write_batch
            )
            self._embed(plan.units, plan.todo, writer, plan.deletions)
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

    def plan(self, inputs: Iterable[str | Path | DocumentLike], *, prune: bool = False) -> Plan:
        """Scan the inputs and diff them against the collection (phases 1 and 2).

        Every engine starts from this plan, so all store the same chunks.

        Raises:
            InputPathError: a named path does not exist (nothing is read, written or deleted).
        """
        self._seen.clear()  # a plan may be made again (the Ray ingest re-plans after a loss)
        units, found = self._scan(inputs)
        stored = self._stored()
        todo, deletions, read = self._check(units, stored)
        if prune:
            deletions += self._prune(stored, read, found)
        return Plan(units, todo, deletions)

    def encoding_of(self, path: Path) -> str:
        """The encoding the check settled on for a text file ("" when its start said it)."""
        return self._encodings.get(path, "")

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

    def _stored(self) -> dict[str, StoredDocument]:
        stored: dict[str, StoredDocument] = {}
        for chunk_id, meta in iter_metadatas(self.collection):
            stored.setdefault(str(meta.get("doc_key", "")), StoredDocument()).add(chunk_id, meta)
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
        self, units: list[Unit], stored: dict[str, StoredDocument]
    ) -> tuple[dict[str, Job], list[str], set[str]]:
        report = self.report
        self.progress.phase("checking", total=len(units), unit="file")
        todo: dict[str, Job] = {}
        deletions: list[str] = []
        read: set[str] = set()  # sources read completely this run
        for unit in units:
            try:  # only keys and digests are kept: a big file's documents are not held
                digests = [(d.key, d.source, self._digest(d)) for d in self._documents(unit)]
            except LoaderError as exc:
                report.skipped.append((source_of(unit), exc.reason))
                logger.warning("Skipping %s", exc)
                self.progress.advance()
                continue
            read.add(source_of(unit))
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
                    todo[key] = Job(digest.hash, digest.chars, source, have, entry is None)
            self.progress.advance()
        return todo, deletions, read

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

    # -- phase 3: embed and write -------------------------------------------------------------
    def _embed(
        self, units: list[Unit], todo: dict[str, Job], writer: Writer, deletions: list[str]
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
                self.report.skipped.append((source_of(unit), exc.reason))
        group.deletions.extend(deletions)
        writer.put(group)

    def _embed_document(self, doc: DocumentLike, job: Job, group: Group, writer: Writer) -> Group:
        cut = Cut()
        for record, chars in cut_document(doc, job, self.chunker, cut):
            group.chars += chars
            if record is not None:
                group.add(*record)
            if group.tokens >= self.group_tokens or len(group.records) >= self.group_rows:
                writer.put(group)
                group = Group()
        group.chars += cut.tail
        if cut.changed:
            self.report.skipped.append((doc.key, "changed while being ingested; run again"))
            return group
        if cut.first is not None:
            group.completions.append(cut.first)
        group.deletions.extend(cut.stale)
        if job.added:
            self.report.added += 1
        else:
            self.report.updated += 1
        return group
