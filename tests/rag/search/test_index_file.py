"""The lexical index is derived data: damage to its file, or a folder it cannot write, never fails
a search or an ingest; it is rebuilt from the collection (or kept in memory) with one warning.

Vectors come from all-MiniLM-L6-v2 pinned to float32; the checks compare hit ids and BM25 tokens,
which do not depend on the dtype.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import conan_rag
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.lexical_index import LexicalIndex
from conan_rag.rag.search.retrieval import RetrievalOptions
from tests.pipeline_helpers import without_file_permissions_bypass
from tests.rag.search.test_lexical import FILES, MINILM, _write

CONAN_RAG = Path(sys.executable).with_name("conan-rag")
LEXICAL = RetrievalOptions(k=5, retrieval="lexical")
QUERIES = ("XJ-4471 pump", "Everest 1953", "海淀区")


def _clobber_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"this is no longer SQLite")


def _truncate(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


def _overwrite_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(2 * 4096)  # past the header and the schema page
        file.write(b"\xff" * (size - 3 * 4096))


def _delete_rows(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM chunks WHERE rowid IN (SELECT rowid FROM chunks LIMIT 2)")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "clobbered header": _clobber_header,
    "truncated": _truncate,
    "overwritten mid-file": _overwrite_middle,
    "rows deleted": _delete_rows,
}


def _hits(pipe: Pipeline) -> list[list[str]]:
    return [[h.id for h in pipe.retrieve(q, LEXICAL)] for q in QUERIES]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Pipeline, list[list[str]]]:
    """A collection whose lexical index was built by a search, and that search's hits."""
    _write(tmp_path / "docs", FILES)
    pipe = Pipeline(
        conan_rag.load_encoder(MINILM, device="cpu", dtype="float32"), db=tmp_path / "db"
    )
    pipe.ingest([tmp_path / "docs"])
    return pipe, _hits(pipe)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_index_is_rebuilt_with_one_warning_and_ingests_go_on(
    built: tuple[Pipeline, list[list[str]]],
    tmp_path: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe, want = built
    DAMAGE[damage](pipe.lexical_path)
    caplog.set_level(logging.WARNING, logger="conan_rag")
    reopened = Pipeline(pipe.encoder, db=tmp_path / "db")  # a new process would open it so
    assert _hits(reopened) == want
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(pipe.lexical_path) in warnings[0].getMessage()
    fresh = LexicalIndex(tmp_path / "fresh" / "x.sqlite")
    fresh.sync(reopened.store)
    assert reopened.lexical.tokens() == fresh.tokens()
    assert reopened.info()["documents"] == len(FILES)

    DAMAGE[damage](pipe.lexical_path)  # damaged again, then an ingest that writes to Chroma
    _write(tmp_path / "docs", {"kiwi.txt": "Kiwifruit zebrawood marmalade."})
    later = Pipeline(pipe.encoder, db=tmp_path / "db")
    assert later.ingest([tmp_path / "docs"], prune=True).added == 1
    assert later.retrieve("zebrawood", LEXICAL)[0].metadata["source"].endswith("kiwi.txt")


def _cli(args: list[str], *, read_only: bool = False) -> subprocess.CompletedProcess[str]:
    bypass = without_file_permissions_bypass() if read_only else []
    return subprocess.run(
        [*bypass, str(CONAN_RAG), *args], capture_output=True, text=True, timeout=300
    )


def test_a_lexical_folder_that_cannot_be_written_keeps_the_index_in_memory(
    built: tuple[Pipeline, list[list[str]]], tmp_path: Path
) -> None:
    pipe, _ = built
    db = tmp_path / "db"
    folder = pipe.lexical_path.parent
    query = ["query", "XJ-4471 pump", "--db", str(db), "--retrieval", "lexical", "--json"]
    want = json.loads(_cli(query).stdout)["hits"]
    for path in folder.rglob("*"):
        path.unlink() if path.is_file() else None
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir()
    folder.chmod(0o555)  # the index is missing and cannot be created
    try:
        done = _cli(query, read_only=True)
        assert done.returncode == 0, done.stderr
        assert [h["id"] for h in json.loads(done.stdout)["hits"]] == [h["id"] for h in want]
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and str(folder) in lines[0] and "writable" in lines[0], lines
        _write(tmp_path / "docs", {"kiwi.txt": "Kiwifruit zebrawood marmalade."})
        added = _cli(
            ["ingest", str(tmp_path / "docs"), "--db", str(db), "--no-progress"], read_only=True
        )
        assert added.returncode == 0, added.stderr
        assert "Traceback" not in added.stderr
        info = _cli(["info", "--db", str(db), "--json"], read_only=True)
        assert info.returncode == 0 and json.loads(info.stdout)["documents"] == len(FILES) + 1
    finally:
        folder.chmod(0o755)
    assert not any(folder.iterdir())  # nothing was written there
