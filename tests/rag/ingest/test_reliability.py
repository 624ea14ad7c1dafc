"""Crash safety: SIGKILL or Ctrl-C an ingest midway, re-run, get exactly the clean collection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from conan_rag import load_encoder
from conan_rag.rag.chunking import ChunkConfig
from conan_rag.rag.pipeline import Pipeline
from tests.pipeline_helpers import crash_docs

REPO = Path(__file__).resolve().parents[3]
CHUNKING = ChunkConfig(max_tokens=48, overlap_tokens=8)

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from conan_rag import load_encoder
    from conan_rag.rag.chunking import ChunkConfig
    from conan_rag.rag.pipeline import Pipeline
    from tests.pipeline_helpers import crash_docs

    encoder = load_encoder({model!r}, device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db={db!r}, collection="crash",
                    chunking=ChunkConfig(max_tokens=48, overlap_tokens=8), upsert_batch=8)
    pipe.sync(crash_docs(1))
    print("v1 done", flush=True)
    written = [0]

    def paced(event):
        if event.chunks > written[0]:  # a group was written: wait for the test's go-ahead
            written[0] = event.chunks
            print(f"written {{event.chunks}}", flush=True)
            sys.stdin.readline()

    pipe.sync(crash_docs(2), on_progress=paced)
    print("v2 done", flush=True)
    """
)


def _snapshot(pipe: Pipeline, *, clean: bool = True) -> dict[str, tuple]:
    got = pipe.collection.get(include=["documents", "metadatas"])
    keys = Counter((m["doc_key"], m["chunk_index"]) for m in got["metadatas"])
    assert not clean or max(keys.values()) == 1, "two records for one chunk position"
    return {
        i: (d, m["doc_key"], m["chunk_index"], m["doc_hash"], m.get("n_chunks"))
        for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
    }


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_clean_ingest(tmp_path: Path, conan_tiny: Path) -> None:
    db = str(tmp_path / "killed")
    script = CHILD.format(repo=str(REPO), model=str(conan_tiny), db=db)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # The child waits after each written group until told to go on: the kill lands after the
    # third group, however busy the machine (no race with the child's clock).
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert child.stdin is not None and child.stdout is not None
    lines = []
    while line := child.stdout.readline():
        lines.append(line.strip())
        if sum(x.startswith("written") for x in lines) == 3:
            os.kill(child.pid, signal.SIGKILL)
            break
        if line.startswith("written"):
            child.stdin.write("go\n")
            child.stdin.flush()
    child.wait(timeout=300)
    assert child.returncode == -signal.SIGKILL, lines
    assert lines[0] == "v1 done" and "v2 done" not in lines
    written = int(lines[-1].split()[1])

    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    # the same two syncs, never killed: how many chunks v2 embeds over v1
    unkilled = Pipeline(
        encoder,
        db=str(tmp_path / "unkilled"),
        collection="crash",
        chunking=CHUNKING,
        upsert_batch=8,
    )
    unkilled.sync(crash_docs(1))
    total = unkilled.sync(crash_docs(2)).chunks_embedded
    assert total > written + 8  # the kill really happened midway

    resumed = Pipeline(encoder, db=db, collection="crash", chunking=CHUNKING, upsert_batch=8)
    half = _snapshot(resumed, clean=False)  # midway: old and new versions side by side
    report = resumed.sync(crash_docs(2))
    assert 0 < report.chunks_embedded <= total - written + 1  # written groups are not redone
    clean = Pipeline(encoder, db=str(tmp_path / "clean"), collection="crash", chunking=CHUNKING)
    clean.sync(crash_docs(2))
    final, expected = _snapshot(resumed), _snapshot(clean)
    assert half != expected
    assert final == expected
    assert resumed.collection.count() == clean.collection.count() == len(expected)
    again = resumed.sync(crash_docs(2))
    assert again.chunks_embedded == 0 and again.unchanged == len(crash_docs(2))


@pytest.mark.slow
def test_ctrl_c_during_the_final_flush_leaves_no_thread_running(
    tmp_path: Path, conan_tiny: Path, monkeypatch
) -> None:
    # Ctrl-C while the ingest waits for its writer to flush the last groups. On Python 3.11 an
    # interrupted Thread.join marks the still-running thread as stopped, so a second join returned
    # at once and the process exited under a thread inside torch/Chroma ("terminate called
    # without an active exception", exit -6). The writer must be finished when the error surfaces.
    import threading

    from conan_rag.rag.ingest import local as writer_module
    from conan_rag.rag.ingest.report import IngestInterrupted

    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    pipe = Pipeline(
        encoder, db=str(tmp_path / "db"), collection="flush", chunking=CHUNKING, upsert_batch=8
    )
    real_close, real_write = writer_module.Writer.close, writer_module.Writer._write
    writers: list = []
    closing, release = threading.Event(), threading.Event()  # synchronised on state, no timers
    sent: list[int] = []

    def close(self, drop_pending: bool = False) -> None:
        writers.append(self)
        (release if drop_pending else closing).set()
        real_close(self, drop_pending)

    def held_write(self, batch) -> None:  # type: ignore[no-untyped-def]
        # Every batch waits for the final flush; the first then sends Ctrl-C and stays in
        # flight until the ingest asks the writer to drop what is queued.
        if closing.wait(120) and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            release.wait(120)
        real_write(self, batch)

    monkeypatch.setattr(writer_module, "QUEUED", 1000)  # every batch queued before the flush
    monkeypatch.setattr(writer_module.Writer, "close", close)
    monkeypatch.setattr(writer_module.Writer, "_write", held_write)
    with pytest.raises(IngestInterrupted) as info:
        pipe.sync(crash_docs(1))
    assert info.value.report.interrupted and len(writers) == 2  # flush, then the drop
    assert writers[0]._done.is_set() and not writers[0]._thread.is_alive()
    monkeypatch.undo()
    report = pipe.sync(crash_docs(1))  # what was written stays; the rest completes
    assert (
        report.chunks_embedded
        < Pipeline(encoder, db=str(tmp_path / "clean"), collection="flush", chunking=CHUNKING)
        .sync(crash_docs(1))
        .chunks_embedded
    )
