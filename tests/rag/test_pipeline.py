"""Pipeline: incremental ingest, retrieval scores, threshold, MMR, answers, concurrency.

Every test using ``make_pipeline`` runs twice: on the embedded store and on a real `chroma run`
server started on a free loopback port.
"""

# ruff: noqa: F811 - pytest fixtures imported from tests.pipeline_helpers
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conan_rag.errors import CollectionMismatchError, ConanConfigError, ConanInputError
from conan_rag.rag.answer import build_prompt, call_llm
from conan_rag.rag.chunking import ChunkConfig
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions as Options
from conan_rag.rag.sources.documents import Document
from tests.pipeline_helpers import (  # noqa: F401 - fixtures
    FACTS,
    fact_docs,
    make_pipeline,
    minilm,
    server_url,
    store,
    tiny,
)


def _all_ids(pipe: Pipeline) -> list[str]:
    return sorted(pipe.collection.get(include=[])["ids"])


def test_ingest_is_incremental(make_pipeline, tiny, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(
        "# A\n\n" + "Alpha protein binds the gene. " * 40, encoding="utf-8"
    )
    (folder / "b.txt").write_text("Beta cells make insulin.", encoding="utf-8")
    (folder / "c.txt").write_text("Gamma rays are energetic.", encoding="utf-8")
    pipe = make_pipeline(tiny, ChunkConfig(max_tokens=64, overlap_tokens=8))
    first = pipe.ingest([folder])
    assert (first.added, first.updated, first.unchanged) == (3, 0, 0)
    assert first.chunks_embedded == pipe.collection.count() > 3
    again = pipe.ingest([folder])
    assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, 3, 0)

    before = {i: m for i, m in zip(*_ids_meta(pipe), strict=True)}
    (folder / "b.txt").write_text("Beta cells make insulin and amylin.", encoding="utf-8")
    changed = pipe.ingest([folder])
    assert (changed.updated, changed.unchanged, changed.chunks_embedded) == (1, 2, 1)
    assert changed.chunks_deleted == 1
    after = dict(zip(*_ids_meta(pipe), strict=True))
    b_old = {i for i, m in before.items() if m["source"].endswith("b.txt")}
    b_new = {i for i, m in after.items() if m["source"].endswith("b.txt")}
    assert len(b_new) == 1 and not (b_old & b_new)
    assert {i for i in before if i not in b_old} == {i for i in after if i not in b_new}

    (folder / "c.txt").unlink()
    kept = pipe.ingest([folder])
    assert kept.deleted == 0 and any(m["source"].endswith("c.txt") for m in _ids_meta(pipe)[1])
    pruned = pipe.ingest([folder], prune=True)
    assert pruned.deleted == 1 and pruned.chunks_embedded == 0
    assert not any(m["source"].endswith("c.txt") for m in _ids_meta(pipe)[1])


def _ids_meta(pipe: Pipeline) -> tuple[list[str], list[dict]]:
    got = pipe.collection.get(include=["metadatas"])
    return got["ids"], got["metadatas"]


def test_chunk_metadata_points_at_text(make_pipeline, tiny) -> None:
    text = "First paragraph about cells.\n\nSecond paragraph about the gene and the protein. " * 6
    pipe = make_pipeline(tiny, ChunkConfig(max_tokens=40, overlap_tokens=0))
    pipe.ingest([Document("d1", text, "mem", title="T")])
    got = pipe.collection.get(include=["metadatas", "documents"])
    assert len(got["ids"]) > 2
    for doc, meta in zip(got["documents"], got["metadatas"], strict=True):
        assert text[meta["char_start"] : meta["char_end"]] == doc
        assert meta["doc_id"] == "d1" and meta["title"] == "T" and meta["source"] == "mem"
    assert sorted(m["chunk_index"] for m in got["metadatas"]) == list(range(len(got["ids"])))


def test_scores_are_true_cosine(make_pipeline, minilm) -> None:
    pipe = make_pipeline(minilm)
    pipe.ingest(fact_docs())
    query = "What is the capital of France?"
    hits = pipe.retrieve(query, Options(k=6))
    assert hits[0].metadata["doc_id"] == "paris"
    q = minilm.encode([query], kind="query")[0]
    texts = {h.id: h.text for h in hits}
    titles = {h.id: h.metadata["title"] for h in hits}
    for hit in hits:
        d = minilm.encode([f"{titles[hit.id]}\n{texts[hit.id]}"])[0]
        assert hit.score == pytest.approx(float(q @ d), abs=1e-5)
        assert -1.0 <= hit.score <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    plain = pipe.retrieve(query, Options(k=6, rescore=False))
    assert {h.id: round(h.score, 4) for h in plain} == {h.id: round(h.score, 4) for h in hits}


def test_threshold_and_where(make_pipeline, minilm) -> None:
    pipe = make_pipeline(minilm)
    pipe.ingest(fact_docs())
    scores = [h.score for h in pipe.retrieve("red planet in the solar system", Options(k=6))]
    cut = (scores[0] + scores[1]) / 2
    hits = pipe.retrieve("red planet in the solar system", Options(k=6, threshold=cut))
    assert len(hits) == 1 and hits[0].metadata["doc_id"] == "mars"
    assert pipe.retrieve("red planet", Options(k=6, threshold=0.99)) == []
    only = pipe.retrieve("red planet", Options(k=6, where={"doc_id": "tea"}))
    assert [h.metadata["doc_id"] for h in only] == ["tea"]


def test_mmr_prefers_diverse_hits(make_pipeline, minilm) -> None:
    docs = [
        Document("p1", "Paris is the capital of France.", "m"),
        Document("p2", "The capital of France is Paris.", "m"),
        Document("p3", "France's capital city is Paris.", "m"),
        Document("wine", "France is famous for its wine regions like Bordeaux.", "m"),
    ]
    pipe = make_pipeline(minilm)
    pipe.ingest(docs)
    plain = [h.metadata["doc_id"] for h in pipe.retrieve("capital of France", Options(k=2))]
    diverse = pipe.retrieve("capital of France", Options(k=2, mmr=True, lambda_mult=0.3))
    assert plain[1] != "wine" and [h.metadata["doc_id"] for h in diverse][1] == "wine"
    assert diverse[0].score > diverse[1].score > -1.0


def test_answer_with_callable_runnable_and_extractive(make_pipeline, minilm) -> None:
    pipe = make_pipeline(minilm)
    pipe.ingest(fact_docs())
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "Paris [1]"

    answer = pipe.answer("What is the capital of France?", llm=llm, options=Options(k=3))
    assert answer.text == "Paris [1]" and prompts == [answer.prompt]
    assert (
        "[1] Paris" in answer.prompt and "Question: What is the capital of France?" in answer.prompt
    )
    assert answer.hits[0].metadata["doc_id"] == "paris"

    class Message:
        content = "From a message [2]"

    class Runnable:
        def invoke(self, prompt: str) -> Message:
            return Message()

    assert pipe.answer("capital of France", llm=Runnable()).text == "From a message [2]"
    extractive = pipe.answer("What is the capital of France?")
    assert extractive.text.startswith("Paris is the capital of France. [1]")
    assert "Sources:\n[1] Paris" in extractive.text
    empty = pipe.answer("capital of France", options=Options(threshold=0.99))
    assert empty.hits == [] and "No stored passage" in empty.text


def test_prompt_and_llm_errors() -> None:
    assert "(none)" in build_prompt("q", [])
    with pytest.raises(TypeError, match="callable or a LangChain runnable"):
        call_llm(42, "p")
    with pytest.raises(TypeError, match="expected a str"):
        call_llm(lambda p: 3, "p")


def test_mismatch_guard_before_write(tmp_path: Path, tiny, minilm) -> None:
    pipe = Pipeline(tiny, db=tmp_path / "db", collection="guarded")
    pipe.ingest(fact_docs())
    count = pipe.collection.count()
    with pytest.raises(CollectionMismatchError) as info:
        Pipeline(minilm, db=tmp_path / "db", collection="guarded")
    message = str(info.value)
    assert tiny.model_id in message and minilm.model_id in message
    assert pipe.collection.count() == count
    reopened = Pipeline(db=tmp_path / "db", collection="guarded")
    assert reopened.encoder.fingerprint == tiny.fingerprint


def test_concurrent_ingest_and_queries(make_pipeline, tiny) -> None:
    pipe = make_pipeline(tiny, ChunkConfig(max_tokens=32, overlap_tokens=0), upsert_batch=4)
    pipe.ingest(fact_docs("seed"))
    docs = [
        Document(f"d{i}", f"Document {i} about the cell and gene {i}. " * 8, "bulk")
        for i in range(40)
    ]
    errors: list[BaseException] = []
    results: list[int] = []

    def ingest() -> None:
        try:
            pipe.ingest(docs)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def query() -> None:
        try:
            for _ in range(15):
                results.append(len(pipe.retrieve("the cell and the gene", Options(k=3))))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ingest), threading.Thread(target=query)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 15 and all(r == 3 for r in results)
    assert pipe.ingest(docs).unchanged == 40


def test_empty_collection_and_bad_arguments(make_pipeline, tiny) -> None:
    pipe = make_pipeline(tiny)
    assert pipe.retrieve("anything") == []
    with pytest.raises(ConanConfigError, match="threshold") as bad:
        pipe.retrieve("x", Options(threshold=1.5))
    assert bad.value.setting == "threshold"
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(ConanInputError, match="query is empty"):
            pipe.retrieve(blank)
        with pytest.raises(ConanInputError, match="query is empty"):
            pipe.answer(blank)
    for fetch_k in (0, -3):
        with pytest.raises(ConanConfigError, match="fetch_k must be an integer >= 1"):
            Options(fetch_k=fetch_k)
    with pytest.raises(ConanConfigError, match="at least k"):
        Options(k=5, fetch_k=2)
    report = pipe.ingest([Document("e", "   ", "m")])
    assert report.empty == 1 and pipe.collection.count() == 0


def test_stored_vectors_match_encoder(make_pipeline, tiny) -> None:
    pipe = make_pipeline(tiny)
    pipe.ingest([Document(k, v, "m") for k, v in FACTS.items()])
    got = pipe.collection.get(include=["embeddings", "documents"])
    again = tiny.encode(got["documents"])
    assert np.allclose(np.asarray(got["embeddings"]), again, atol=1e-5)


def test_bfloat16_scores_are_the_cosine_of_the_stored_vectors(tmp_path: Path, minilm_path) -> None:
    # Run explicitly on every CPU. A score is the cosine between the query vector and the STORED
    # chunk vector (not a re-encoding), so it holds exactly in bf16; against float32 vectors the
    # bf16 ones are close, not equal.
    from conan_rag import load_encoder

    bf16 = load_encoder(str(minilm_path), device="cpu", dtype="bfloat16")
    pipe = Pipeline(bf16, db=tmp_path / "db")
    pipe.ingest(fact_docs())
    hits = pipe.retrieve("What is the capital of France?", Options(k=6))
    assert hits[0].metadata["doc_id"] == "paris"
    stored = pipe.collection.get(ids=[h.id for h in hits], include=["embeddings", "documents"])
    vectors = dict(zip(stored["ids"], np.asarray(stored["embeddings"]), strict=True))
    q = bf16.encode(["What is the capital of France?"], kind="query")[0]
    for hit in hits:
        assert hit.score == pytest.approx(float(vectors[hit.id] @ q), abs=1e-5)
    fp32 = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    assert fp32.fingerprint == bf16.fingerprint  # interchangeable: same collection either way
    exact = fp32.encode([f"{h.metadata['title']}\n{h.text}" for h in hits])
    cos = (exact * np.stack([vectors[h.id] for h in hits])).sum(axis=1)
    assert cos.min() >= 0.999 and cos.max() < 1.0 - 1e-7
