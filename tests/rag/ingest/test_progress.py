"""What the progress bars print: counts as integers with their unit, read as a person would."""

from __future__ import annotations

import pytest

from conan_rag.rag.ingest.progress import Progress


def test_bars_show_whole_counts_and_plural_units(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(show=True)
    progress.phase("scanning", unit="file")
    progress.advance(3)
    progress.phase("embedding", total=50_000, unit="char")
    progress.advance(25_000, chunks=20_000)
    progress.close()
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "3 files" in err and "0file" not in err
    assert "chunks=20000" in err and "e+" not in err, err
