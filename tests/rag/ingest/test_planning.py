"""Planning touches only what it needs: a one-file ingest reads that file's stored chunks only.

Vectors here come from the tiny random-weight Conan-layout model in float32; nothing numeric is
checked, only which records the plan reads through the store protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conan_rag import load_encoder
from conan_rag.rag import ChunkConfig, Pipeline
from tests.pipeline_helpers import Reads

CHUNKING = ChunkConfig(max_tokens=48, overlap_tokens=8)


def _files(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        text = " ".join(f"Gene {i} binds protein {j} in cell line {i}." for j in range(12))
        (folder / f"paper{i:03d}.txt").write_text(text, encoding="utf-8")


def test_a_one_file_ingest_reads_only_that_files_stored_chunks(
    tmp_path: Path, conan_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db=tmp_path / "db", chunking=CHUNKING)
    corpus = tmp_path / "docs"
    _files(corpus, 40)
    pipe.ingest([corpus])
    stored = pipe.store.count()
    assert stored >= 80  # the collection is much larger than one file

    one = tmp_path / "one"
    _files(one, 1, start=500)
    reads = Reads(monkeypatch, pipe.store)
    report = pipe.ingest([one])
    assert report.added == 1
    assert reads.records["scan"] == 0  # the plan never walks the collection
    assert reads.records["find"] == 0  # a new file: nothing of it is stored yet

    reads = Reads(monkeypatch, pipe.store)
    again = pipe.ingest([one])  # unchanged: its stored chunks, and nothing else, are read
    file_chunks = report.chunks_embedded
    assert again.unchanged == 1 and again.chunks_embedded == 0
    assert reads.records["find"] == file_chunks and reads.records["scan"] == 0

    (one / "paper500.txt").write_text("A shorter text now.", encoding="utf-8")
    reads = Reads(monkeypatch, pipe.store)
    changed = pipe.ingest([one])
    assert changed.updated == 1 and changed.chunks_deleted == file_chunks  # ids follow the text
    assert reads.records["find"] == file_chunks and reads.records["scan"] == 0
    assert pipe.store.count() == stored + 1

    reads = Reads(monkeypatch, pipe.store)
    pipe.ingest([corpus], prune=True)  # prune looks for what is gone: it reads the collection
    assert reads.records["scan"] == pipe.store.count()
