"""The Ray ingest on a real local Ray runtime (2 CPUs) and a real `chroma run` server.

It must build the same collection as the single-process ingest (same ids, documents and
metadata; vectors within cos 0.9999; here both float32), embed nothing on a re-run, survive a
killed encoder actor and a killed driver without duplicates, and report bad files the same way.
One Ray runtime serves the module (start-up is paid once); the CLI tests start their own.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conan_rag import load_encoder
from conan_rag.errors import CollectionMismatchError, StoreError
from conan_rag.rag.ingest.progress import ProgressEvent
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.lexical_index import LexicalIndex
from conan_rag.rag.store import open_client
from tests.pipeline_helpers import chroma_server, ctrl_c_live, popen_with_ctrl_c

ray = pytest.importorskip("ray")

from conan_rag.rag.ingest.export import MANIFEST, load_export  # noqa: E402
from conan_rag.rag.ingest.ray import RayEngine, noting_sigint, ray_runtime  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.server]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CLI = [sys.executable, "-m", "conan_rag.cli"]


def _ctrl_c_until(stopped: threading.Event) -> None:
    """Send SIGINT to the main thread (this one) and run bytecodes until its handler has run."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
    while not stopped.is_set():  # the handler sets it, then raises; the test's timeout guards
        pass


class _SignalsItselfWhenCollected:
    def __init__(self, stopped: threading.Event) -> None:
        self.stopped = stopped

    def __del__(self) -> None:
        _ctrl_c_until(self.stopped)  # Python runs the handler here, in the finalizer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_lost_in_a_finalizer_is_still_noted() -> None:
    """Python ignores a KeyboardInterrupt raised in a finalizer; the driver checks the event."""
    with ctrl_c_live():  # where pytest runs as a background job, SIGINT starts ignored
        with noting_sigint() as stopped:
            _SignalsItselfWhenCollected(stopped)  # collected at once: its KeyboardInterrupt is lost
            assert stopped.is_set()
        with pytest.raises(KeyboardInterrupt), noting_sigint() as stopped:
            _ctrl_c_until(stopped)  # anywhere else it is raised as usual
        assert stopped.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    with ray_runtime("local", num_cpus=2) as started:
        yield started


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("ray_chroma")) as url:
        yield url


@pytest.fixture(scope="module")
def encoder() -> Any:
    return load_encoder(MINILM, device="cpu", dtype="float32")


def write_corpus(folder: Path, data_dir: Path, n: int, start: int = 0) -> Path:
    """``n`` SciFact abstracts as text files (title as first line), plus a corrupt PDF."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(data_dir / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(start + n), fh)][start:]
    for row in rows:
        (folder / f"{row['_id']}.md").write_text(
            f"# {row['title']}\n\n{row['text']}\n", encoding="utf-8"
        )
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a real pdf")
    return folder


def snapshot(pipe: Pipeline) -> dict[str, tuple[str, dict[str, Any], np.ndarray]]:
    got = pipe.collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        i: (d, dict(m or {}), np.asarray(e, dtype=np.float64))
        for i, d, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])
    }


def assert_same_collection(expected: Pipeline, actual: Pipeline) -> None:
    """Same ids, documents and metadata; vectors within cos 0.9999; no extra records."""
    want, have = snapshot(expected), snapshot(actual)
    assert sorted(have) == sorted(want)
    assert actual.collection.count() == expected.collection.count() == len(want)
    for chunk_id, (text, meta, vector) in want.items():
        other_text, other_meta, other_vector = have[chunk_id]
        assert other_text == text
        assert other_meta == meta
        cos = vector @ other_vector / np.linalg.norm(vector) / np.linalg.norm(other_vector)
        assert cos >= 0.9999, (chunk_id, cos)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ray_corpus") / "docs", data_dir, 40)


@pytest.fixture(scope="module")
def reference(encoder: Any, server: str, corpus: Path) -> Pipeline:
    """The single-process ingest of the corpus, on the server."""
    pipe = Pipeline(encoder, url=server, collection="reference")
    report = pipe.ingest([corpus])
    assert report.added == 40 and len(report.skipped) == 1
    return pipe


def test_ray_builds_the_same_collection_then_embeds_nothing(
    ray_local: Any, encoder: Any, server: str, corpus: Path, reference: Pipeline
) -> None:
    pipe = Pipeline(encoder, url=server, collection="ray-same")
    engine = RayEngine(encoders=2, batch_rows=16)
    report = pipe.ingest([corpus], engine=engine)
    single = reference.ingest([corpus])  # a re-run of the single-process ingest: the same report
    assert report.added == 40 and report.completed == 40
    assert report.chunks_embedded == reference.collection.count()
    # a bad file is skipped and reported as in the single-process path
    assert report.skipped == single.skipped and "broken.pdf" in report.skipped[0][0]
    assert_same_collection(reference, pipe)

    again = pipe.ingest([corpus], engine=engine)
    assert (again.chunks_embedded, again.unchanged, again.added) == (0, 40, 0)
    assert_same_collection(reference, pipe)


def test_ray_on_the_embedded_store_updates_and_prunes_like_single_process(
    ray_local: Any, encoder: Any, tmp_path: Path, data_dir: Path
) -> None:
    docs = write_corpus(tmp_path / "docs", data_dir, 12)
    single = Pipeline(encoder, db=tmp_path / "single")
    on_ray = Pipeline(encoder, db=tmp_path / "ray")
    engine = RayEngine(batch_rows=8)
    for step in range(2):
        if step == 1:  # one file changed, one gone
            victim, changed = sorted(docs.glob("*.md"))[:2]
            victim.unlink()
            changed.write_text(changed.read_text(encoding="utf-8") + "\nA new closing line.\n")
        a = single.ingest([docs], prune=True)
        b = on_ray.ingest([docs], prune=True, engine=engine)
        assert (b.added, b.updated, b.deleted, b.unchanged) == (
            a.added,
            a.updated,
            a.deleted,
            a.unchanged,
        )
        assert b.chunks_deleted == a.chunks_deleted
        assert_same_collection(single, on_ray)
    assert (a.updated, a.deleted) == (1, 1)


def _kill_an_encoder_actor() -> bool:
    """``ray.kill`` one live encoder actor of the running dataset (found in Ray's actor table)."""
    from ray._raylet import ActorID

    worker = ray._private.worker.global_worker
    for actor_id, info in ray._private.state.actors().items():
        if "EmbedChunks" in info.get("ActorClassName", "") and info.get("State") == "ALIVE":
            handle = worker.core_worker.get_actor_handle(ActorID.from_hex(actor_id))
            ray.kill(handle)  # no_restart=True: the actor is gone for good
            return True
    return False


def test_killing_an_encoder_actor_mid_run_still_completes(
    ray_local: Any,
    encoder: Any,
    server: str,
    corpus: Path,
    reference: Pipeline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    killed: list[bool] = []

    def kill_once(event: ProgressEvent) -> None:
        if event.phase == "embedding" and event.done > 0 and not killed:
            killed.append(_kill_an_encoder_actor())

    pipe = Pipeline(encoder, url=server, collection="ray-actor-kill")
    with caplog.at_level("WARNING", logger="conan_rag.rag.ingest.ray"):
        report = pipe.ingest([corpus], engine=RayEngine(batch_rows=4), on_progress=kill_once)
    assert killed == [True]
    assert "planning again" in caplog.text  # the run lost the actor and finished anyway
    assert report.added == 40  # documents written before the kill are still "added"
    assert_same_collection(reference, pipe)


def _ingest_command(corpus: Path, server: str, collection: str) -> list[str]:
    return [
        *CLI,
        "ingest",
        str(corpus),
        "--ray",
        "local",
        "--chroma-url",
        server,
        "--collection",
        collection,
        "--model",
        MINILM,
        "--dtype",
        "float32",
        "--ray-batch-rows",
        "4",
        "--no-progress",
    ]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_stopping_the_driver_then_rerunning_completes_without_duplicates(
    encoder: Any, server: str, corpus: Path, reference: Pipeline, stop: signal.Signals
) -> None:
    """The driver killed (or Ctrl-C in its terminal: the whole process group), then re-run."""
    name = f"ray-driver-{stop.name.lower()}"
    env = dict(os.environ)
    proc = popen_with_ctrl_c(  # a background job's ignored SIGINT is not passed on
        _ingest_command(corpus, server, name),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Ray's processes too: the whole group is killed
    )
    client = open_client(url=server)
    deadline = time.monotonic() + 240
    count = 0
    total = reference.collection.count()
    while count == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            count = client.get_collection(name, embedding_function=None).count()
        except Exception:  # noqa: BLE001 - not created yet
            count = 0
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.killpg(proc.pid, stop)
    code = proc.wait(60)
    assert 0 < count < total  # stopped mid-run
    if stop == signal.SIGINT:  # one sentence, no traceback
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert code == 130, err
        assert "interrupted;" in err and "Run the same command again to resume." in err
        assert "Traceback" not in err

    rerun = subprocess.run(
        [*_ingest_command(corpus, server, name), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard only
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["chunks_embedded"] < total  # what was written before the kill was kept
    assert_same_collection(reference, Pipeline(encoder, url=server, collection=name))


def test_parquet_export_then_load(
    ray_local: Any,
    encoder: Any,
    server: str,
    corpus: Path,
    reference: Pipeline,
    tmp_path: Path,
    conan_tiny: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    export = tmp_path / "export"
    staging = Pipeline(encoder, db=tmp_path / "plan")  # the plan is made against this one
    report = staging.ingest([corpus], engine=RayEngine(batch_rows=16), to_parquet=export)
    assert report.added == 40 and report.chunks_embedded == reference.collection.count()
    assert staging.collection.count() == 0  # nothing written to the store
    table = pq.read_table(export / "chunks")
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert json.loads((export / MANIFEST).read_text())["fingerprint"] == encoder.fingerprint

    client = open_client(url=server)
    loaded = load_export(export, client, "ray-loaded")
    assert loaded.completed == 40 and loaded.chunks_embedded == reference.collection.count()
    assert_same_collection(reference, Pipeline(encoder, url=server, collection="ray-loaded"))
    load_export(export, client, "ray-loaded")  # loading again changes nothing
    assert_same_collection(reference, Pipeline(encoder, url=server, collection="ray-loaded"))

    other = Pipeline(load_encoder(str(conan_tiny), device="cpu"), url=server, collection="other")
    with pytest.raises(CollectionMismatchError, match="fingerprint"):
        load_export(export, client, other.name)
    assert other.collection.count() == 0
    with pytest.raises(StoreError, match="not empty"):
        staging.ingest([corpus], engine=RayEngine(), to_parquet=export)
    (export / MANIFEST).unlink()  # an unfinished export
    with pytest.raises(StoreError, match="did not finish"):
        load_export(export, client, "ray-unfinished")


def test_cli_local_runtime_export_and_load(
    encoder: Any, tmp_path: Path, data_dir: Path, server: str
) -> None:
    """`--ray local` starts and stops its own runtime; `conan-rag load` stores the export."""
    docs = write_corpus(tmp_path / "docs", data_dir, 6)
    export = tmp_path / "export"
    base = ["--model", MINILM, "--dtype", "float32", "--no-progress", "--json"]
    made = subprocess.run(
        [
            *CLI,
            "ingest",
            str(docs),
            "--db",
            str(tmp_path / "db"),
            "--to-parquet",
            str(export),
            *base[:-1],  # the summary line, as a person reads it
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    summary = made.stdout.splitlines()[0]
    assert summary.startswith("exported 6 documents (") and f"conan-rag load {export}" in summary
    assert "added" not in made.stdout  # nothing was added to a collection
    stored = subprocess.run(
        [
            *CLI,
            "load",
            str(export),
            "--chroma-url",
            server,
            "--collection",
            "cli-load",
            "--json",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["completed"] == 6
    single = Pipeline(encoder, db=tmp_path / "single")
    single.ingest([docs])
    assert_same_collection(single, Pipeline(encoder, url=server, collection="cli-load"))


def test_a_ray_ingest_into_a_searched_server_collection_updates_the_index_by_delta(
    ray_local: Any,
    encoder: Any,
    server: str,
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The writer actors write; the driver notes their ids, and the index reads only those."""
    from conan_rag.rag.search.retrieval import RetrievalOptions

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the server index's home
    pipe = Pipeline(encoder, url=server, collection="ray-delta")
    pipe.ingest([write_corpus(tmp_path / "docs", data_dir, 6)])
    lexical = RetrievalOptions(k=1, retrieval="lexical")
    assert pipe.retrieve("cells", lexical) and pipe.lexical.is_current(pipe.store)
    extra = write_corpus(tmp_path / "extra", data_dir, 2, start=100)
    with caplog.at_level("INFO", logger="conan_rag.rag.search.lexical_index"):
        report = pipe.ingest([extra], engine=RayEngine(batch_rows=4))
    assert report.added == 2 and "updated by delta" in caplog.text
    fresh = LexicalIndex(tmp_path / "fresh.sqlite")
    fresh.sync(pipe.store)
    assert pipe.lexical.tokens() == fresh.tokens() and len(fresh) == pipe.store.count()
