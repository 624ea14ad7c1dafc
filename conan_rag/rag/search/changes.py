"""The chunk ids a conan-rag write run touched, kept for the lexical index to update by delta.

A :class:`~conan_rag.rag.ingest.sink.StoreSink` that marks a collection changed opens a run
under the collection's new generation, noting the store version it started from; each write
adds the ids it touched (and, where the sink made the store calls itself, how many records it
sent: Chroma's embedded write log grows by exactly that many); a run that finishes is closed.
:meth:`~conan_rag.rag.search.lexical_index.LexicalIndex.ensure` then re-reads only those ids,
and only when the run is closed, started from the version the index was synced at, and (on an
embedded store) explains every write-log entry since. Anything else (a run still going or
killed, a foreign write, a second writer) falls back to the full sync, which is always right.

The runs live in the lexical index's own SQLite file, so a collection that has no index yet
keeps none.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "index.sqlite"
    >>> log = ChangeLog(path, "g1", base="g0:seq5")
    >>> log.note(["a", "b"], ops=2)
    >>> log.close()
    >>> run = read_run(path, "g1")
    >>> run.base, run.ops, run.closed, sorted(run.ids)
    ('g0:seq5', 2, True, ['a', 'b'])
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChangeLog", "ChangeRun", "forget_runs", "read_run"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS change_runs "
    "(generation TEXT PRIMARY KEY, base TEXT, ops INTEGER, closed INTEGER)",
    "CREATE TABLE IF NOT EXISTS change_ids "
    "(generation TEXT, id TEXT, PRIMARY KEY (generation, id))",
    "CREATE TABLE IF NOT EXISTS change_writers "
    "(generation TEXT PRIMARY KEY, host TEXT, pid INTEGER, abandoned INTEGER)",
)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60)
    for statement in _SCHEMA:
        db.execute(statement)
    return db


@dataclass
class ChangeRun:
    """One write run: where it started, what it touched, whether it finished.

    Attributes:
        base: the store version read before the run marked the collection changed.
        ops: records sent to the store (``None``: others wrote too, e.g. Ray writer actors).
        closed: the run finished.
        ids: every chunk id it wrote, completed or deleted.
        writing: the run is open and its writer still at work: a process alive on this machine
            that has not abandoned it (an open run of a dead or failed writer is not writing).
    """

    base: str
    ops: int | None
    closed: bool
    ids: list[str]
    writing: bool = False


class ChangeLog:
    """The writer's side: open a run, note what each write touched, close it.

    Args:
        path: the lexical index's SQLite file (it must exist: no index, no log).
        generation: the collection's generation the run's writes are made under.
        base: the store version read before the generation was set.
    """

    def __init__(self, path: Path, generation: str, base: str) -> None:
        self.path = path
        self.generation = generation
        with _connect(path) as db:
            db.execute("INSERT OR REPLACE INTO change_runs VALUES (?, ?, 0, 0)", (generation, base))
            db.execute(
                "INSERT OR REPLACE INTO change_writers VALUES (?, ?, ?, 0)",
                (generation, socket.gethostname(), os.getpid()),
            )

    def note(self, ids: Iterable[str], ops: int | None) -> None:
        """Add ids written (or deleted); ``ops``: records sent to the store, ``None``: unknown."""
        with _connect(self.path) as db:
            db.executemany(
                "INSERT OR IGNORE INTO change_ids VALUES (?, ?)",
                [(self.generation, str(i)) for i in ids],
            )
            if ops is None:
                db.execute(
                    "UPDATE change_runs SET ops = NULL WHERE generation = ?", (self.generation,)
                )
            else:
                db.execute(
                    "UPDATE change_runs SET ops = ops + ? WHERE generation = ?",
                    (ops, self.generation),
                )

    def close(self) -> None:
        """The run finished: its ids are all the changes of its generation."""
        with _connect(self.path) as db:
            db.execute("UPDATE change_runs SET closed = 1 WHERE generation = ?", (self.generation,))

    def abandon(self) -> None:
        """The run failed or was stopped: no reader waits for it to close.

        It stays open (not all its changes may be noted), so readers sync in full.
        """
        with _connect(self.path) as db:
            db.execute(
                "UPDATE change_writers SET abandoned = 1 WHERE generation = ?", (self.generation,)
            )


def _alive(host: str | None, pid: int | None) -> bool:
    """Whether process ``pid`` of ``host`` runs (only this machine's can be checked).

    A dead writer's pid taken by another process reads as alive: its run's changes then wait
    for the next conan-rag write to the collection (a new run), which syncs them.
    """
    if host != socket.gethostname() or pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def read_run(path: Path, generation: str) -> ChangeRun | None:
    """The run recorded under ``generation`` in the index file at ``path``, if any."""
    with _connect(path) as db:
        row = db.execute(
            "SELECT base, ops, closed FROM change_runs WHERE generation = ?", (generation,)
        ).fetchone()
        if row is None:
            return None
        rows = db.execute("SELECT id FROM change_ids WHERE generation = ?", (generation,))
        ids = [r[0] for r in rows]
        writer = db.execute(
            "SELECT host, pid, abandoned FROM change_writers WHERE generation = ?", (generation,)
        ).fetchone()
    closed = bool(row[2])
    writing = writer is not None and not closed and not writer[2] and _alive(writer[0], writer[1])
    return ChangeRun(base=str(row[0]), ops=row[1], closed=closed, ids=ids, writing=writing)


def forget_runs(
    db: sqlite3.Connection, *, keep: str | None = None, only: str | None = None
) -> None:
    """Drop the run under ``only``, or every run but the one under ``keep``.

    Runs inside the caller's transaction (the index forgets a run as it applies it).
    """
    for statement in _SCHEMA:
        db.execute(statement)
    for table in ("change_runs", "change_ids", "change_writers"):
        if only is not None:
            db.execute(f"DELETE FROM {table} WHERE generation = ?", (only,))
        else:
            db.execute(f"DELETE FROM {table} WHERE generation IS NOT ?", (keep,))
