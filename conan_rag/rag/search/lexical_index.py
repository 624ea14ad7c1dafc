"""LexicalIndex: BM25 (bm25s) over a store's chunks, derived from the store itself.

The index never has a life of its own: it is rebuilt from what the
:class:`~conan_rag.rag.store.protocol.VectorStore` holds, so it cannot drift from it. Each chunk
is indexed with its document's title (:func:`lexical_text`). Its tokens live in a small SQLite
file (chunk id, a hash of that text, its tokens, and the chunk's document key and source, so the
same table is the collection's catalog: :meth:`LexicalIndex.counts` for ``info`` and
:meth:`LexicalIndex.keys_under` for a prune are index lookups); :meth:`LexicalIndex.sync`
scans the store's texts, tokenizes only the chunks that are new or changed, and forgets the ones
that are gone; every chunk id whose tokens change is also appended to a change log in the same
transaction. The bm25s matrices are built from the tokens (5,183 SciFact abstracts index in
about 0.25 s) and saved beside them in bm25s's own format (``<name>.bm25/``, stamped with the
change-log position they were built at), so a fresh process memory-maps them instead of
re-indexing. After a write, the matrices are kept and the chunks the change log names since
they were built are searched as a delta beside them (:mod:`~conan_rag.rag.search.bm25_delta`:
re-written and deleted chunks masked out, new ones scored with the matrices' statistics), so a
search after a small ingest reads only what the ingest wrote, in this process or the next. Past
``delta_share`` of the matrices (5 %), or below ``delta_min_segment`` chunks (2,000), they are
rebuilt from every token instead, which bounds the statistics' drift. A missing, damaged or
stale saved folder is rebuilt from the tokens.

Knowing when to sync costs one cheap call: the index records the store's
:meth:`~conan_rag.rag.store.protocol.VectorStore.version` it was synced at, read *before* the
scan. conan-rag's write path marks the store changed before it writes, and the store's version
also moves when another program writes where the store can see it; a write killed halfway, or
one made during a sync, leaves a version the index has not recorded, so the next search syncs
again: the index always equals one built from scratch. Where the file lives is the store's
choice (:meth:`~conan_rag.rag.store.protocol.VectorStore.derived_path` with ``"lexical"``).

Example:
    >>> import tempfile
    >>> index = LexicalIndex(tempfile.mkdtemp() + "/notes.sqlite")
    >>> len(index), index.version, index.search("cats")
    (0, None, [])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from conan_rag.rag.search.bm25_delta import (
    DELTA_MIN_SEGMENT,
    DELTA_SHARE,
    Delta,
    Segment,
    delta_limit,
)
from conan_rag.rag.search.changes import ChangeRun, forget_runs, read_run
from conan_rag.rag.search.index_file import IndexFile
from conan_rag.rag.search.tokens import TOKENIZER_VERSION, lexical_tokens, lexical_tokens_many

if TYPE_CHECKING:
    from conan_rag.rag.store.protocol import VectorStore

__all__ = ["PAGE", "LexicalIndex", "SyncReport", "lexical_text"]
logger = logging.getLogger(__name__)

PAGE = 2000  # chunks read from the store per page while syncing
_VERSION = "store_version"  # meta key: the store version the tokens were synced at
_FLOOR = "changes_floor"  # meta key: segments built before this change-log position are stale
_SCHEMA = "chunks-3"  # chunks table layout; another layout is dropped and synced again
_CHUNKS = (
    "CREATE TABLE chunks (id TEXT PRIMARY KEY, hash TEXT, tokens TEXT, doc_key TEXT, source TEXT)",
    "CREATE INDEX chunks_doc_key ON chunks (doc_key)",
    "CREATE INDEX chunks_source ON chunks (source)",
    # every chunk id whose tokens were written or deleted, in order: the delta of a segment
    "CREATE TABLE IF NOT EXISTS chunk_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT)",
)
Row = tuple[str, str, str, str, str]  # id, lexical text, hash, document key, source
T = TypeVar("T")


@dataclass
class SyncReport:
    """What a sync changed: chunks tokenized anew, removed, and kept.

    Example:
        >>> SyncReport(added=2).kept
        0
    """

    added: int = 0
    removed: int = 0
    kept: int = 0


def lexical_text(text: str, metadata: Any) -> str:
    r"""What BM25 indexes for a chunk: its document's title, then its text.

    A chunk cut from the middle of a document does not repeat the title, often its most telling
    words; dense vectors do not need it, BM25 does.

    Example:
        >>> lexical_text("rest of the abstract", {"title": "Aspirin and stroke"})
        'Aspirin and stroke\nrest of the abstract'
    """
    title = str((metadata or {}).get("title") or "").strip()
    return f"{title}\n{text}" if title and not text.startswith(title) else text


STAMP = "conan_rag_stamp.json"  # in the saved folder, written last: ids, version, tokenizer


def save(folder: Path, segment: Segment) -> None:
    """Save matrices with bm25s's own ``save``, then the stamp; swap the folder in whole.

    A process killed midway leaves a folder without a matching stamp, or a temporary folder:
    both are ignored and rebuilt. A folder that cannot be written is skipped with a warning
    (the matrices then live in memory only).
    """
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        segment.bm25.save(str(tmp), show_progress=False)
        stamp = {
            "version": segment.version,
            "tokenizer": TOKENIZER_VERSION,
            "seq": segment.seq,
            "avgdl": segment.avgdl,
            "ids": segment.ids,
        }
        (tmp / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}-{threading.get_ident()}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        logger.warning(
            "Cannot save the lexical index in %s (%s); it is kept in memory", folder, exc
        )
        shutil.rmtree(tmp, ignore_errors=True)


def load_saved(folder: Path) -> Segment | None:
    """The saved matrices (memory-mapped) when they are whole and of this tokenizer, else None."""
    import bm25s

    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        if stamp.get("tokenizer") != TOKENIZER_VERSION or "seq" not in stamp:
            return None
        ids = list(stamp["ids"])
        bm25 = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
        if int(bm25.scores["num_docs"]) != len(ids):
            return None
        return Segment(ids, bm25, stamp.get("version"), int(stamp["seq"]), float(stamp["avgdl"]))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind: rebuilt
        logger.warning("The saved lexical index in %s is damaged (%s); rebuilding it", folder, exc)
        return None


def _explains(run: ChangeRun, synced: str | None, current: str) -> bool:
    """Whether ``run`` alone leads from version ``synced`` to ``current``.

    It must be closed and have started from ``synced``. Where the versions carry Chroma's write
    log sequence (an embedded store), the log must have grown by exactly the records the run
    sent: a foreign write in between makes it grow more. A server's versions carry the count;
    :meth:`LexicalIndex.apply_changes` checks that afterwards.
    """
    if not run.closed or synced is None or run.base != synced:
        return False
    before, after = synced.partition(":")[2], current.partition(":")[2]
    if after.startswith("seq") or before.startswith("seq"):
        if run.ops is None or not (after.startswith("seq") and before.startswith("seq")):
            return False
        return int(after[3:]) - int(before[3:]) == run.ops
    return True


def _rows(ids: list[str], texts: Sequence[str | None], metadatas: Sequence[Any]) -> list[Row]:
    """(id, lexical text, hash, document key, source) for a page of stored chunks."""
    rows = []
    for i, text, meta in zip(ids, texts, metadatas, strict=True):
        meta = meta or {}
        body = lexical_text(text or "", meta)
        key, source = str(meta.get("doc_key", "")), str(meta.get("source", ""))
        digest = hashlib.sha1("\0".join((body, key, source)).encode("utf-8")).hexdigest()
        rows.append((i, body, digest, key, source))
    return rows


def _head(db: sqlite3.Connection) -> int:
    """The last change-log position ever given out (0: none)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunk_changes'").fetchone()
    return 0 if row is None else int(row[0])


def _forget(db: sqlite3.Connection, gone: list[tuple[str]]) -> None:
    """Delete chunks' tokens, logging each id as changed."""
    db.executemany("DELETE FROM chunks WHERE id = ?", gone)
    db.executemany("INSERT INTO chunk_changes (id) VALUES (?)", gone)


def _tokens_of(db: sqlite3.Connection, ids: list[str]) -> dict[str, list[str]]:
    """The stored tokens of those of ``ids`` that exist."""
    found: dict[str, list[str]] = {}
    for start in range(0, len(ids), 500):
        some = ids[start : start + 500]
        marks = ",".join("?" * len(some))
        rows = db.execute(f"SELECT id, tokens FROM chunks WHERE id IN ({marks})", some)
        found.update((i, json.loads(t)) for i, t in rows)
    return found


def _prefix_range(folder: str) -> tuple[str, str]:
    """The ``[low, high)`` string range of every path under ``folder``."""
    low = folder.rstrip("/") + "/"
    return low, low[:-1] + chr(ord("/") + 1)


class LexicalIndex:
    """BM25 over one store's chunks, its tokens kept in a SQLite file.

    Args:
        path: the SQLite file (created with its folder when missing); for a store, use
            ``store.derived_path("lexical")``.
        delta_share: the most changed chunks, as a share of the built matrices, searched as a
            delta beside them before they are rebuilt (:mod:`~conan_rag.rag.search.bm25_delta`).
        delta_min_segment: below this many chunks, every change rebuilds the matrices.

    Example:
        >>> import tempfile
        >>> LexicalIndex(tempfile.mkdtemp() + "/x.sqlite").tokens()
        {}
    """

    def __init__(
        self,
        path: str | Path,
        *,
        delta_share: float = DELTA_SHARE,
        delta_min_segment: int = DELTA_MIN_SEGMENT,
    ) -> None:
        self.path = Path(path)
        self.delta_share, self.delta_min_segment = delta_share, delta_min_segment
        self._lock = threading.Lock()
        self._ensuring = threading.Lock()
        self._delta: Delta | None = None  # the matrices searched: a segment and its delta
        self._loaded = False  # whether the in-memory matrices were built in this process
        self._built: str | None = None  # and at which store version
        self._checked: str | None = None  # the store version the row count was checked at
        self._store: VectorStore | None = None  # the store last ensured against (for healing)
        self._file = IndexFile(self.path, self._setup, derived=(self.saved_path,))

    def _setup(self, db: sqlite3.Connection) -> None:
        """Create the tables; a chunks table in another layout (or other tokens) is dropped."""
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        layout = f"{_SCHEMA}/{TOKENIZER_VERSION}"
        if self._meta(db, "layout") != layout:
            db.execute("DROP TABLE IF EXISTS chunks")
            for statement in _CHUNKS:
                db.execute(statement)
            db.execute("DELETE FROM chunk_changes")
            self._set_meta(db, "layout", layout)
            self._set_meta(db, _VERSION, "")
            self._set_meta(db, _FLOOR, str(_head(db) + 1))  # no segment from before is valid
        self._loaded, self._built, self._checked = False, None, None

    def _db(self) -> sqlite3.Connection:
        return self._file.connect()

    def _healing(self, call: Callable[[], T]) -> T:
        """Run ``call``; when the file turns out damaged or unwritable, heal, catch up, retry."""
        try:
            return call()
        except (sqlite3.Error, OSError) as exc:
            if not self._file.recover(exc):
                raise
        if self._store is not None:
            self._ensure(self._store, matrices=False)
        return call()

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def version(self) -> str | None:
        """The store version the stored tokens were last synced at (``None``: never)."""
        with self._db() as db:
            return self._meta(db, _VERSION) or None

    def is_current(self, store: VectorStore) -> bool:
        """Whether this index, as loaded in this process, equals the store's content now."""
        current = store.version()
        return self._loaded and self._built == current and self.version == current

    def ensure(self, store: VectorStore, *, matrices: bool = True) -> None:
        """Catch up when the store changed since the last sync (or never was); else load.

        A change made by one finished conan-rag write run is applied by delta (only the ids the
        run touched are read, see :mod:`~conan_rag.rag.search.changes`); any other change is a
        full :meth:`sync`. Another process sharing the file may have synced it: then only the
        matrices are rebuilt. ``matrices=False`` brings the tokens in step only (an ingest does
        that; the next search builds the matrices, once, and saves them).
        """
        self._store = store
        # One catch-up at a time. A search arriving meanwhile answers from the matrices in
        # memory (a committed state) instead of queueing behind it; without them, it waits.
        if not self._ensuring.acquire(blocking=not (matrices and self._loaded)):
            return
        try:
            self._healing(lambda: self._ensure(store, matrices=matrices))
        finally:
            self._ensuring.release()

    def _ensure(self, store: VectorStore, *, matrices: bool) -> None:
        current = store.version()
        if self.version != current:
            if matrices and self._writing(current):
                return  # answer as of the run's start, a committed state; apply it once closed
            if not self.apply_changes(store, current, matrices=matrices):
                self.sync(store, matrices=matrices)
        elif self._checked != current and (held := self._count()) != (stored := store.count()):
            logger.warning(
                "The lexical index %s holds %d chunks, the collection %d; rebuilding it.",
                self.path,
                held,
                stored,
            )
            self.sync(store, matrices=matrices)
        elif matrices and (not self._loaded or self._built != current):
            self._rebuild()
        self._checked = current

    def _writing(self, current: str) -> bool:
        """Whether a conan-rag run that started from this index's version is writing now.

        Syncing then would read a half-written run (and, searched often, sync again after each
        of its writes); the index instead stays as it was when the run started, until the run
        closes (then it is applied by delta) or its writer fails or dies (then a full sync).
        The matrices are loaded as of that version when they are not in memory yet.
        """
        if self._file.in_memory:
            return False
        run = read_run(self.path, current.partition(":")[0])
        if run is None or not run.writing or run.base != self.version:
            return False
        if not self._loaded or self._built != self.version:
            self._rebuild()
        return True

    def _count(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def apply_changes(self, store: VectorStore, current: str, *, matrices: bool = True) -> bool:
        """Apply the one closed write run that leads from the synced version to ``current``.

        Returns:
            False (nothing changed) when no such run explains every change; then sync.
        """
        if self._file.in_memory:
            return False  # the change notes live in the file: a full sync, in memory
        run = read_run(self.path, current.partition(":")[0])
        if run is None or not _explains(run, self.version, current):
            return False
        with self._lock, self._db() as db:
            report = self._retokenize(db, store, run.ids)
            if int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]) != store.count():
                db.rollback()  # someone else added or removed chunks meanwhile
                return False
            self._set_meta(db, _VERSION, current)
            forget_runs(db, only=current.partition(":")[0])
        logger.info("Lexical index updated by delta: %s", report)
        if matrices:
            self._rebuild()
        return True

    def _retokenize(self, db: sqlite3.Connection, store: VectorStore, ids: list[str]) -> SyncReport:
        """Re-read ``ids`` from the store: tokenize the changed, drop the gone."""
        report = SyncReport()
        for start in range(0, len(ids), PAGE):
            some = ids[start : start + PAGE]
            page = store.get(some, fields=("texts", "metadatas"))
            rows = _rows(page.ids, page.texts or [], page.metadatas or [{} for _ in page.ids])
            known = dict(
                db.execute(
                    f"SELECT id, hash FROM chunks WHERE id IN ({','.join('?' * len(some))})", some
                ).fetchall()
            )
            fresh = [row for row in rows if known.get(row[0]) != row[2]]
            self._store_tokens(db, fresh)
            found = set(page.ids)
            gone = [(i,) for i in some if i not in found and i in known]
            _forget(db, gone)
            report.added += len(fresh)
            report.removed += len(gone)
            report.kept += len(rows) - len(fresh)
        return report

    @staticmethod
    def _store_tokens(db: sqlite3.Connection, fresh: list[Row]) -> None:
        """Tokenize and store rows (see :data:`Row`)."""
        tokens = lexical_tokens_many([row[1] for row in fresh])
        db.executemany("INSERT INTO chunk_changes (id) VALUES (?)", [(row[0],) for row in fresh])
        db.executemany(
            "INSERT OR REPLACE INTO chunks (id, hash, tokens, doc_key, source) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (i, h, json.dumps(tok), key, source)
                for (i, _, h, key, source), tok in zip(fresh, tokens, strict=True)
            ],
        )

    def sync(self, store: VectorStore, *, matrices: bool = True) -> SyncReport:
        """Make the index equal to the store: tokenize new and changed chunks, drop gone ones.

        The store's version is read first, so a change made while syncing leaves the index
        marked stale (synced again next time), never wrongly current.
        """
        version = store.version()
        report = SyncReport()
        with self._lock, self._db() as db:
            known = dict(db.execute("SELECT id, hash FROM chunks").fetchall())
            seen: set[str] = set()
            for page in store.scan(fields=("texts", "metadatas"), page=PAGE):
                metadatas = page.metadatas or [{} for _ in page.ids]
                rows = _rows(page.ids, page.texts or [], metadatas)
                fresh = [row for row in rows if known.get(row[0]) != row[2]]
                seen.update(page.ids)
                self._store_tokens(db, fresh)
                report.added += len(fresh)
            gone = [(i,) for i in known if i not in seen]
            _forget(db, gone)
            report.removed = len(gone)
            report.kept = len(seen) - report.added
            self._set_meta(db, _VERSION, version)
            forget_runs(db, keep=version.partition(":")[0])  # a run still going may close later
        if matrices:
            self._rebuild()
        return report

    @property
    def saved_path(self) -> Path:
        """The folder of the saved bm25s matrices (beside the tokens file)."""
        return self.path.with_suffix(".bm25")

    def _rebuild(self) -> None:
        """Bring the in-memory matrices to the stored tokens' version.

        The segment in memory, else the one saved by the last build (bm25s's own format,
        memory-mapped), is kept when the chunks changed since it was built are few enough for a
        delta (:mod:`~conan_rag.rag.search.bm25_delta`): only those chunks' tokens are read.
        Otherwise the matrices are built from every stored token (one consistent read) and saved
        for the next process.
        """
        found = self._read_delta()
        if found is None:
            segment = self._build()
            found = Delta(segment, (), {}), segment.version
        delta, version = found
        with self._lock:
            self._delta, self._built, self._loaded = delta, version, True

    def _read_delta(self) -> tuple[Delta, str | None] | None:
        """The kept segment with the changes since it was built, and the tokens' version.

        ``None`` when there is no usable segment or too much changed: then build anew.
        """
        with self._db() as db:
            db.execute("BEGIN")
            try:
                version = self._meta(db, _VERSION) or None
                count = int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
                main = self._segment(int(self._meta(db, _FLOOR) or 0))
                if main is None or main.seq > _head(db):
                    return None
                limit = delta_limit(len(main.ids), self.delta_share, self.delta_min_segment)
                rows = db.execute(
                    "SELECT DISTINCT id FROM chunk_changes WHERE seq > ? LIMIT ?",
                    (main.seq, limit + 1),
                )
                changed = [r[0] for r in rows]
                if changed and (len(changed) > limit or not main.scorable):
                    return None
                delta = Delta(main, changed, _tokens_of(db, changed))
            finally:
                db.rollback()
        return (delta, version) if len(delta) == count else None

    def _segment(self, floor: int) -> Segment | None:
        """The segment in memory, else the saved one, if built at ``floor`` or later."""
        if self._delta is not None and self._delta.main.seq >= floor:
            return self._delta.main
        saved = None if self._file.in_memory else load_saved(self.saved_path)
        return saved if saved is not None and saved.seq >= floor else None

    def _build(self) -> Segment:
        """Matrices over every stored token, saved; the change log before them is dropped."""
        import bm25s

        with self._db() as db:
            db.execute("BEGIN")
            rows = db.execute("SELECT id, tokens FROM chunks ORDER BY id").fetchall()
            version = self._meta(db, _VERSION) or None
            seq = _head(db)
            db.rollback()
        tokens = [json.loads(r[1]) for r in rows]
        avgdl = float(np.mean([len(t) for t in tokens])) if tokens else 0.0
        segment = Segment([r[0] for r in rows], None, version, seq, avgdl)
        if tokens:
            segment.bm25 = bm25s.BM25()
            segment.bm25.index(tokens, show_progress=False)
            if not self._file.in_memory:
                save(self.saved_path, segment)
                self._drop_changes(seq)
        return segment

    def _drop_changes(self, seq: int) -> None:
        """Forget the change log up to ``seq``: segments older than it are rebuilt or reloaded."""
        try:
            with self._db() as db:
                db.execute("DELETE FROM chunk_changes WHERE seq <= ?", (seq,))
                floor = max(seq, int(self._meta(db, _FLOOR) or 0))
                self._set_meta(db, _FLOOR, str(floor))
        except sqlite3.Error as exc:  # busy or read-only: the log is kept, which is harmless
            logger.debug("Kept the lexical change log (%s)", exc)

    def __len__(self) -> int:
        return 0 if self._delta is None else len(self._delta)

    def layout(self) -> dict[str, int]:
        """What a search reads now: the built matrices and the delta beside them.

        ``segment``: chunks in the matrices; ``masked``: those of them deleted or re-written
        since; ``delta``: chunks scored beside them; ``built_at``: the change-log position the
        matrices were built at.

        Example:
            >>> import tempfile
            >>> LexicalIndex(tempfile.mkdtemp() + "/x.sqlite").layout()
            {'segment': 0, 'masked': 0, 'delta': 0, 'built_at': -1}
        """
        delta = self._delta
        if delta is None:
            return {"segment": 0, "masked": 0, "delta": 0, "built_at": -1}
        segment = delta.main
        return {
            "segment": len(segment.ids),
            "masked": delta.dead,
            "delta": len(delta.ids),
            "built_at": segment.seq,
        }

    def counts(self) -> dict[str, int]:
        """Chunks, documents and sources as of the last sync (three indexed SQL counts).

        Example:
            >>> import tempfile
            >>> LexicalIndex(tempfile.mkdtemp() + "/x.sqlite").counts()
            {'chunks': 0, 'documents': 0, 'sources': 0}
        """
        return self._healing(self._counts)

    def _counts(self) -> dict[str, int]:
        with self._db() as db:
            chunks = int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
            docs = int(db.execute("SELECT COUNT(DISTINCT doc_key) FROM chunks").fetchone()[0])
            sources = int(db.execute("SELECT COUNT(DISTINCT source) FROM chunks").fetchone()[0])
        return {"chunks": chunks, "documents": docs, "sources": sources}

    def keys_under(self, sources: Iterable[str], folders: Iterable[str | Path]) -> list[str]:
        """Document keys stored with one of these ``sources`` or a source under ``folders``.

        Index range lookups: the cost grows with what is found, not with the collection.

        Example:
            >>> import tempfile
            >>> LexicalIndex(tempfile.mkdtemp() + "/x.sqlite").keys_under(["/a.txt"], ["/docs"])
            []
        """
        return self._healing(lambda: self._keys_under(sources, folders))

    def _keys_under(self, sources: Iterable[str], folders: Iterable[str | Path]) -> list[str]:
        keys: set[str] = set()
        with self._db() as db:
            for source in set(sources):
                rows = db.execute("SELECT DISTINCT doc_key FROM chunks WHERE source = ?", (source,))
                keys.update(r[0] for r in rows)
            for folder in set(folders):
                rows = db.execute(
                    "SELECT DISTINCT doc_key FROM chunks WHERE source >= ? AND source < ?",
                    _prefix_range(str(folder)),
                )
                keys.update(r[0] for r in rows)
        return sorted(keys)

    def tokens(self) -> dict[str, list[str]]:
        """Every chunk's stored tokens (for tests and diagnostics)."""

        def read() -> dict[str, list[str]]:
            with self._db() as db:
                return {i: json.loads(t) for i, t in db.execute("SELECT id, tokens FROM chunks")}

        return self._healing(read)

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best chunks for ``query`` by BM25: (chunk id, score), best first.

        Chunks with no query word in common (score 0) are left out. Call :meth:`ensure` first
        to bring the index in step with its store.
        """
        if not self._loaded:
            self._healing(self._rebuild)
        delta = self._delta
        words = lexical_tokens(query)
        if delta is None or not words:
            return []
        return delta.search(words, k)
