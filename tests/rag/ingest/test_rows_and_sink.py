"""The row stream every engine runs, the store sink and completion, run in-process (no Ray)."""

from __future__ import annotations

import pickle
import tempfile
from typing import Any

import numpy as np
import pytest

from conan_rag import load_encoder
from conan_rag.errors import ConanConfigError
from conan_rag.rag.chunking import ChunkConfig, Chunker
from conan_rag.rag.ingest.planning import Job, WorkItem
from conan_rag.rag.ingest.ray import RayEngine
from conan_rag.rag.ingest.report import IngestReport
from conan_rag.rag.ingest.rows import Limits, cut_item, cut_units
from conan_rag.rag.ingest.sink import Completer, StoreSink, with_retries
from conan_rag.rag.sources import Document
from conan_rag.rag.store import ChromaStore, open_client

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LONG = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(60))


@pytest.fixture(scope="module")
def encoder() -> Any:
    return load_encoder(MINILM, device="cpu", dtype="float32")


def _batch(chunker: Chunker, docs: list[Document], jobs: dict[str, Job]) -> dict[str, Any]:
    items = [pickle.dumps(WorkItem(d, {d.key: jobs[d.key]})) for d in docs]  # what Ray ships
    return {"item": np.asarray(items, dtype=object)}


def test_cut_units_rows_match_the_chunker_and_account_for_every_character(encoder: Any) -> None:
    chunker = Chunker(encoder, ChunkConfig(max_tokens=64, overlap_tokens=8))
    doc = Document("long", LONG, "src", title="Topics")
    digest = chunker.digest(doc)
    jobs = {doc.key: Job(digest.hash, digest.chars, "src", {}, True)}
    shipped = pickle.loads(pickle.dumps(chunker))  # what a Ray task gets: same hashes
    assert shipped.signature == chunker.signature
    batches = list(cut_units(_batch(chunker, [doc], jobs), shipped))
    kinds = np.concatenate([b["kind"] for b in batches]).tolist()
    ids = np.concatenate([b["id"] for b in batches]).tolist()
    chunks = chunker.chunk(doc)
    assert len(chunks) > 3
    assert kinds == ["chunk"] * (len(chunks) - 1) + ["first"]  # chunk 0 last
    assert ids == [c.id for c in chunks[1:]] + [chunks[0].id]
    last = batches[-1]
    assert last["n"][-1] == len(chunks) and last["parts"][-1] == len(chunks) - 1
    assert sum(int(b["chars"].sum()) for b in batches) == digest.chars


def test_a_document_changed_since_it_was_checked_becomes_a_skip_row(encoder: Any) -> None:
    chunker = Chunker(encoder)
    doc = Document("a", "The first text.", "src")
    jobs = {doc.key: Job("0" * 32, 15, "src", {}, True)}  # planned with another text's hash
    (batch,) = cut_units(_batch(chunker, [doc], jobs), chunker)
    assert batch["kind"].tolist() == ["skip"]
    assert "changed while being ingested" in batch["text"][0]


def test_a_document_completes_only_when_all_its_chunks_are_written(encoder: Any) -> None:
    chunker = Chunker(encoder, ChunkConfig(max_tokens=64, overlap_tokens=8))
    doc = Document("long", LONG, "src")
    digest = chunker.digest(doc)
    jobs = {doc.key: Job(digest.hash, digest.chars, "src", {}, True)}
    (batch,) = cut_units(_batch(chunker, [doc], jobs), chunker)
    batch["vector"] = encoder.encode(list(batch["embed"]), kind="document")
    store = ChromaStore.open(open_client(tempfile.mkdtemp()), "docs", encoder)
    sink = StoreSink(store, 100)
    report = IngestReport()
    completer = Completer(sink, report)
    order = np.arange(len(batch["kind"]))[::-1]  # chunk 0's row arrives first, the rest after
    for i in order:
        part = {name: values[i : i + 1] for name, values in batch.items()}
        completer.tally(sink.write(part))
        completer.flush()
        done = i == order[-1]
        assert completer.pending == (0 if done else 1)
        first = store.get([str(batch["id"][-1])], ["metadatas"]).metadatas or [{}]
        assert ("n_chunks" in first[0]) == done  # complete only once every chunk is written
    assert (report.added, report.completed, report.chunks_embedded) == (1, 1, len(order))
    first = store.get([str(batch["id"][-1])], ["metadatas"]).metadatas or [{}]
    assert first[0]["n_chunks"] == len(order) and first[0]["chunk_index"] == 0


def test_a_big_document_streams_in_bounded_batches_and_completes_once(encoder: Any) -> None:
    chunker = Chunker(encoder, ChunkConfig(max_tokens=64, overlap_tokens=8))
    doc = Document("long", LONG, "src")
    digest = chunker.digest(doc)
    item = WorkItem(doc, {doc.key: Job(digest.hash, digest.chars, "src", {}, True)})
    batches = list(cut_item(item, chunker, Limits(rows=3)))
    assert len(batches) > 2 and all(len(b["kind"]) <= 3 for b in batches)
    kinds = np.concatenate([b["kind"] for b in batches]).tolist()
    assert kinds.count("first") == 1 and kinds[-1] == "first"
    assert batches[-1]["parts"][-1] == len(kinds) - 1


def test_with_retries_retries_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conan_rag.rag.ingest.sink.BACKOFF_S", 0.0)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("server restarting")
        return "ok"

    assert with_retries(flaky, "upsert") == "ok" and len(calls) == 3
    with pytest.raises(ConnectionError):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionError("down")), "upsert", 2)


def test_ray_engine_is_config_as_data_and_refuses_bad_values() -> None:
    engine = RayEngine(address="auto", encoders=4, gpus_per_encoder=1.0)
    assert RayEngine.from_dict(engine.to_dict()) == engine
    with pytest.raises(ConanConfigError, match="local, auto or ray://HOST:PORT"):
        RayEngine(address="http://head:8265")
    with pytest.raises(ConanConfigError, match="encoders must be at least 1"):
        RayEngine(encoders=0)
    with pytest.raises(ConanConfigError, match="valid options are"):
        RayEngine.from_dict({"gpus": 1})


def test_cli_refuses_bad_ray_options_before_loading_anything(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from conan_rag.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text.", encoding="utf-8")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("not an export", encoding="utf-8")
    db = tmp_path / "db"
    base = ["ingest", str(docs), "--db", str(db), "--model", MINILM, "--no-progress"]
    cases = [
        (["--ray", "cluster"], "local, auto or ray://HOST:PORT"),
        (["--ray", "local", "--ray-encoders", "0"], "encoders must be at least 1"),
        (["--to-parquet", str(busy)], "not empty"),
        (["--ray", "local", "--endpoint", "http://127.0.0.1:9"], "cannot use --endpoint"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not db.exists()  # nothing created
    assert (busy / "keep.txt").read_text(encoding="utf-8") == "not an export"
    assert main(["load", str(busy), "--db", str(db)]) == 2  # not an export: refused
    assert "conan_rag_export.json" in capsys.readouterr().err and not db.exists()
