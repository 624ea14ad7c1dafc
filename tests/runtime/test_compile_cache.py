"""The compiled-model cache on its own: builders that race, builds that fail or were killed,
and a cache folder that cannot be written. No model is compiled here (the builds write small
files); ``test_compiled.py`` covers the real package.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conan_rag.runtime import compile_cache as cache
from tests.pipeline_helpers import without_file_permissions_bypass

ROOT = Path(__file__).resolve().parents[2]
KEY = {"model": "m", "dtype": "float32"}
NAME = "m-float32-e"


def _build(folder: Path) -> dict[str, object]:
    (folder / "a.bin").write_bytes(b"package")
    return {"parity_ok": True}


class _SeesWaiting(logging.Handler):
    """Sets ``event`` when a builder logs that it waits for another one's lock."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Waiting for another process"):
            self.event.set()


def test_a_second_builder_waits_and_uses_the_first_ones_entry(tmp_path: Path) -> None:
    inside, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_build(folder: Path) -> dict[str, object]:
        calls.append("first")
        inside.set()
        assert release.wait(60)
        return _build(folder)

    def second_build(folder: Path) -> dict[str, object]:
        calls.append("second")
        return _build(folder)

    first = threading.Thread(target=cache.write_entry, args=(tmp_path, NAME, KEY, slow_build))
    first.start()
    assert inside.wait(60)
    seen = _SeesWaiting()
    cache.logger.addHandler(seen)
    try:
        result: list[Path] = []
        second = threading.Thread(
            target=lambda: result.append(cache.write_entry(tmp_path, NAME, KEY, second_build))
        )
        second.start()
        assert seen.event.wait(60)  # the second builder is blocked on the lock
        release.set()
        first.join(60)
        second.join(60)
    finally:
        cache.logger.removeHandler(seen)
    assert calls == ["first"]  # built once
    assert result == [tmp_path / NAME]
    assert cache.read_entry(tmp_path, NAME, KEY)["parity_ok"] is True  # type: ignore[index]


def test_a_failed_build_leaves_no_entry_and_killed_builds_are_cleared(tmp_path: Path) -> None:
    def broken(folder: Path) -> dict[str, object]:
        (folder / "a.bin").write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cache.write_entry(tmp_path, NAME, KEY, broken)
    assert cache.check_entry(tmp_path, NAME, KEY) == (None, None)
    assert not list(tmp_path.glob(".build-*"))
    killed = tmp_path / f".build-{NAME}-killed"  # what a process killed mid-build leaves
    killed.mkdir()
    (killed / "a.bin").write_bytes(b"half")
    assert cache.check_entry(tmp_path, NAME, KEY) == (None, None)  # never read as an entry
    cache.write_entry(tmp_path, NAME, KEY, _build)
    assert not killed.exists()
    assert cache.read_entry(tmp_path, NAME, KEY) is not None


def test_reading_a_corrupt_entry_changes_nothing_until_asked(tmp_path: Path) -> None:
    entry = cache.write_entry(tmp_path, NAME, KEY, _build)
    (entry / "a.bin").write_bytes(b"changed")
    assert cache.check_entry(tmp_path, NAME, KEY) == (None, "corrupt (a.bin missing or changed)")
    assert (entry / "a.bin").read_bytes() == b"changed"  # check_entry has no side effects
    cache.write_entry(tmp_path, NAME, KEY, _build)  # the next build replaces it
    assert (entry / "a.bin").read_bytes() == b"package"


def test_an_unwritable_cache_is_found_before_building(tmp_path: Path) -> None:
    """Run without root's permission bypass, so the folder's mode bits hold."""
    root = tmp_path / "compiled"
    root.mkdir()
    root.chmod(0o555)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from conan_rag.runtime import compile_cache as cache\n"
        "built = []\n"
        "root = Path(sys.argv[1])\n"
        "try:\n"
        "    cache.write_entry(root, 'm-float32-e', {'k': 1}, lambda d: built.append(d) or {})\n"
        "except cache.CacheNotWritableError as exc:\n"
        "    print(json.dumps({'error': str(exc), 'reason': exc.reason, 'built': len(built)}))\n"
    )
    try:
        result = subprocess.run(
            [*without_file_permissions_bypass(), sys.executable, "-c", code, str(root)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        root.chmod(0o755)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["built"] == 0  # nothing was compiled
    assert out["reason"] == "Permission denied"
    assert str(root) in out["error"] and "XDG_CACHE_HOME" in out["error"]
    assert list(root.iterdir()) == []
