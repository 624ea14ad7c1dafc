"""An ingest of many small files holds only the work in flight, not a record per file (issue 23).

Structural, not RSS thresholds: while the embedding phase runs, the live
:class:`~conan_rag.rag.ingest.planning.WorkItem` objects are counted. The plan used to make all
of them up front (one per file, each with a copy of its jobs) and keep them to the end.
"""

from __future__ import annotations

import gc
from pathlib import Path

from conan_rag import load_encoder
from conan_rag.rag import Pipeline
from conan_rag.rag.ingest.planning import WorkItem
from conan_rag.rag.ingest.progress import ProgressEvent

FILES = 200


def _live_items() -> int:
    return sum(type(obj) is WorkItem for obj in gc.get_objects())


def test_the_embedding_phase_holds_only_the_work_items_in_flight(
    tmp_path: Path, conan_tiny: Path
) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for i in range(FILES):
        text = f"Note {i}: gene {i} binds protein {i * 7} in cell line {i % 13}."
        (corpus / f"note{i:04d}.txt").write_text(text, encoding="utf-8")
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db=tmp_path / "db", upsert_batch=16)
    counts: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        # Once, early in the embedding phase: most files are still to be cut.
        if event.phase == "embedding" and event.chunks and not counts:
            counts.append(_live_items())

    report = pipe.ingest([corpus], on_progress=on_progress)
    assert report.added == FILES and report.chunks_embedded == FILES
    assert counts, "no progress event during embedding"
    assert counts[0] <= 4, f"{counts[0]} work items alive for {FILES} files"
