"""The lexical index's SQLite file: opened, rebuilt when damaged, in memory when unwritable.

The file holds derived data only (tokens, catalog columns, change notes), so no damage to it is
worth a traceback: a file SQLite reports as corrupt (a clobbered header, a truncated or
overwritten file) is deleted, with its saved matrices, and the index is rebuilt from the
collection with one warning; a folder that cannot be written (read-only, no permission) moves
the index into an in-memory database for the life of the process, seeded from the file when it
can still be read, with one warning naming the folder and the fix.

What it can notice: damage SQLite reports (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``), a file shorter
than its header says (checked at open, O(1)), and a refused write or open (``SQLITE_READONLY``,
``SQLITE_CANTOPEN``, ``SQLITE_PERM``, a ``PermissionError``). Rows deleted from a file that is
otherwise sound are noticed by the index's row count (see
:meth:`~conan_rag.rag.search.lexical_index.LexicalIndex.ensure`).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "x.sqlite"
    >>> _ = path.write_bytes(b"not a database, just bytes" * 100)
    >>> file = IndexFile(path, setup=lambda db: db.execute("CREATE TABLE t (a)"))
    >>> file.in_memory, file.connect().execute("SELECT COUNT(*) FROM t").fetchone()
    (False, (0,))
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Literal

__all__ = ["IndexFile", "damage_kind"]
logger = logging.getLogger(__name__)

_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_UNWRITABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
_MEMORY_IDS = itertools.count()
Setup = Callable[[sqlite3.Connection], object]


def damage_kind(exc: BaseException) -> Literal["damaged", "unwritable"] | None:
    """Whether ``exc`` says the index file is damaged, cannot be written, or neither.

    Example:
        >>> damage_kind(PermissionError("no")), damage_kind(ValueError("x"))
        ('unwritable', None)
    """
    if isinstance(exc, PermissionError):
        return "unwritable"
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    if name.startswith(_DAMAGED) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name.startswith(_UNWRITABLE) or "readonly database" in text or "unable to open" in text:
        return "unwritable"
    return None


class IndexFile:
    """Connections to one index file, or to its in-memory stand-in.

    Args:
        path: the SQLite file (its folder is created when missing).
        setup: brings a connection's schema up to date (run at open and after a reset).
        derived: other paths made from the file (the saved matrices), deleted with it.
    """

    def __init__(self, path: Path, setup: Setup, derived: tuple[Path, ...] = ()) -> None:
        self.path = path
        self._setup = setup
        self._derived = derived
        self._memory: str | None = None
        self._keeper: sqlite3.Connection | None = None  # holds the in-memory database open
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._check_length()
            with self.connect() as db:
                setup(db)
        except (sqlite3.Error, OSError) as exc:
            if not self.recover(exc):
                raise

    @property
    def in_memory(self) -> bool:
        """Whether the index lives in memory (its folder could not be written)."""
        return self._memory is not None

    def connect(self) -> sqlite3.Connection:
        """A new connection (use it as a context manager: one transaction)."""
        if self._memory is not None:
            return sqlite3.connect(self._memory, uri=True, timeout=60, check_same_thread=False)
        return sqlite3.connect(self.path, timeout=60)

    def recover(self, exc: BaseException) -> bool:
        """Deal with ``exc`` if it is damage or a refused write; False: not ours, re-raise it."""
        kind = damage_kind(exc)
        if kind == "damaged" and self._memory is None:
            logger.warning(
                "The lexical index %s is damaged (%s); rebuilding it from the collection "
                "(derived data: nothing stored is lost).",
                self.path,
                exc,
            )
            try:
                self.discard()
            except OSError as refused:  # damaged and read-only: start empty, in memory
                self._to_memory(refused, seed=False)
        elif kind == "unwritable" and self._memory is None:
            self._to_memory(exc)
        else:
            return False
        try:
            with self.connect() as db:
                self._setup(db)
        except (sqlite3.Error, OSError) as again:
            if damage_kind(again) != "unwritable" or self._memory is not None:
                raise
            self._to_memory(again)
            with self.connect() as db:
                self._setup(db)
        return True

    def discard(self) -> None:
        """Delete the file, its journals and the paths derived from it."""
        for path in (self.path, *(self.path.with_name(self.path.name + s) for s in _JOURNALS)):
            path.unlink(missing_ok=True)
        for path in self._derived:
            shutil.rmtree(path, ignore_errors=True)

    def _check_length(self) -> None:
        """Raise ``SQLITE_CORRUPT``-like damage when the file is shorter than its header says."""
        try:
            with self.path.open("rb") as file:
                header = file.read(100)
        except FileNotFoundError:
            return
        if len(header) < 100:
            if header:
                raise sqlite3.DatabaseError("file is not a database (shorter than its header)")
            return
        page = int.from_bytes(header[16:18], "big")
        page = 65536 if page == 1 else page
        pages = int.from_bytes(header[28:32], "big")
        if header.startswith(b"SQLite format 3\0") and page * pages > self.path.stat().st_size:
            raise sqlite3.DatabaseError("database disk image is malformed (file truncated)")

    def _to_memory(self, exc: BaseException, *, seed: bool = True) -> None:
        """Move to an in-memory database, seeded from the file when it can be read."""
        folder = self.path.parent
        logger.warning(
            "The lexical index cannot be written in %s (%s); keeping it in memory for this "
            "process (rebuilt from the collection when needed). Make %s writable to keep it.",
            folder,
            exc,
            folder,
        )
        self._memory = f"file:conan-rag-lexical-{next(_MEMORY_IDS)}?mode=memory&cache=shared"
        self._keeper = sqlite3.connect(self._memory, uri=True, check_same_thread=False)
        if not seed or not self.path.exists():
            return
        try:
            source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                source.backup(self._keeper)
            finally:
                source.close()
        except sqlite3.Error:
            pass  # nothing readable there: the index is built from the collection


_JOURNALS = ("-journal", "-wal", "-shm")
