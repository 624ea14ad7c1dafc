"""Lexical (BM25) and hybrid retrieval: tokens, fusion, and an index always equal to a fresh one.

Vectors here come from all-MiniLM-L6-v2 pinned to float32 (on every CPU); the checks on cosines
compare with the same encoder's vectors, 1e-5 apart at most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import conan_rag
from conan_rag.rag.ingest.report import IngestInterrupted
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.fusion import rrf
from conan_rag.rag.search.lexical_index import LexicalIndex
from conan_rag.rag.search.retrieval import RetrievalOptions
from conan_rag.rag.search.tokens import lexical_tokens
from tests.pipeline_helpers import Reads, server_url  # noqa: F401 - the fixture used below

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FILES = {
    "everest.txt": "Tenzing Norgay and Edmund Hillary first climbed Mount Everest in 1953.",
    "code.txt": "Error code XJ-4471 means the pump's pressure valve is stuck; replace part 88-B.",
    "tea.txt": "Green tea is steamed or pan-fired soon after picking, so it stays green.",
    "beijing.txt": "北京大学位于北京市海淀区，创建于1898年。",
    "rain.txt": "梅雨季节，长江中下游地区阴雨连绵，空气潮湿。",
}


def test_tokens_for_chinese_english_and_full_width() -> None:
    assert lexical_tokens("The pumps were RUNNING") == ["pump", "were", "run"]  # stop word, stems
    assert lexical_tokens("ＸＪ－４４７１") == ["xj", "4471"]  # full-width to half-width
    words = lexical_tokens("我们在北京大学读书")
    assert {"北京", "大学", "北京大学"} <= set(words)  # search mode: words and sub-words
    assert "我们在北京大学读书" not in words  # not one token per run of characters
    assert lexical_tokens("用BM25检索") == ["用", "bm25", "检索"]
    assert lexical_tokens("，。！？ ... ") == []


def test_reciprocal_rank_fusion() -> None:
    fused = dict(rrf([["a", "b"], ["b", "c"]], weights=[1.0, 1.0], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61) and fused["c"] == pytest.approx(1 / 62)
    only_lexical = rrf([["a", "b"], ["b", "c"]], weights=[0.0, 1.0], k=60)
    assert [i for i, s in only_lexical if s > 0] == ["b", "c"]


def test_options_are_checked() -> None:
    with pytest.raises(conan_rag.ConanConfigError, match=r"\['dense', 'lexical', 'hybrid'\]"):
        RetrievalOptions(retrieval="bm25")
    with pytest.raises(conan_rag.ConanConfigError, match="weights"):
        RetrievalOptions(retrieval="hybrid", weights=(0.0, 0.0))


def test_options_are_settings_with_rescore_not_rerank() -> None:
    import json

    options = RetrievalOptions(k=3, retrieval="hybrid", weights=(1, 0.5), where={"doc_id": "a"})
    assert options.weights == (1.0, 0.5) and options.rescore is True
    assert RetrievalOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    assert options.replace(rescore=False).rescore is False
    with pytest.raises(conan_rag.ConanConfigError, match="'rescore'") as unknown:
        options.replace(rerank=False)  # the old name: exact re-scoring is `rescore`
    assert unknown.value.setting == "rerank"
    with pytest.raises(conan_rag.ConanConfigError, match="rescore must be one of"):
        RetrievalOptions(rescore=1)  # type: ignore[arg-type]
    with pytest.raises(conan_rag.ConanConfigError, match="lambda_mult"):
        RetrievalOptions(lambda_mult=float("nan"))


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def pipe(tmp_path: Path) -> Pipeline:
    _write(tmp_path / "docs", FILES)
    encoder = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")
    pipeline = Pipeline(encoder, db=tmp_path / "db")
    pipeline.ingest([tmp_path / "docs"])
    return pipeline


def _fresh(pipe: Pipeline, tmp_path: Path) -> LexicalIndex:
    index = LexicalIndex(tmp_path / "fresh" / "x.sqlite")
    index.sync(pipe.store)
    return index


def test_lexical_finds_exact_terms_and_reports_true_cosines(pipe: Pipeline) -> None:
    hits = pipe.retrieve("XJ-4471", RetrievalOptions(k=2, retrieval="lexical"))
    assert hits[0].metadata["source"].endswith("code.txt")
    assert hits[0].lexical_score is not None and hits[0].lexical_score > 0
    query = pipe.encoder.encode(["XJ-4471"], kind="query")[0]
    stored = pipe.store.get([hits[0].id], ("vectors",)).vectors
    assert stored is not None and stored.dtype == np.float32
    cosine = float(query @ stored[0] / np.linalg.norm(stored[0]))  # float32 vectors
    assert hits[0].score == pytest.approx(cosine, abs=1e-5)
    chinese = pipe.retrieve("海淀区", RetrievalOptions(k=1, retrieval="lexical"))
    assert chinese[0].metadata["source"].endswith("beijing.txt")


def test_hybrid_fuses_both_lists_and_the_threshold_means_cosine(pipe: Pipeline) -> None:
    hybrid = pipe.retrieve("Who climbed Everest?", RetrievalOptions(k=3, retrieval="hybrid"))
    assert hybrid[0].metadata["source"].endswith("everest.txt")
    assert all(h.fused_score is not None for h in hybrid)
    fused = [h.fused_score for h in hybrid]
    assert fused == sorted(fused, reverse=True)
    kept = pipe.retrieve(
        "Who climbed Everest?", RetrievalOptions(k=5, retrieval="hybrid", threshold=0.3)
    )
    assert kept and all(h.score >= 0.3 for h in kept)
    where = pipe.retrieve(
        "tea", RetrievalOptions(k=5, retrieval="lexical", where={"title": "no such title"})
    )
    assert where == []


def test_the_index_equals_a_fresh_one_after_updates_prunes_and_a_killed_run(
    pipe: Pipeline, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    pipe.retrieve("tea", RetrievalOptions(retrieval="lexical"))  # the index now exists
    assert pipe.lexical_path.exists()
    # update one file, add one, delete one; ingest with prune
    _write(docs, {"tea.txt": "Black tea is fully oxidised.", "new.txt": "Quartz is SiO2."})
    (docs / "rain.txt").unlink()
    pipe.ingest([docs], prune=True)
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()
    assert (
        pipe.retrieve("quartz", RetrievalOptions(k=1, retrieval="lexical"))[0]
        .metadata["source"]
        .endswith("new.txt")
    )
    assert pipe.retrieve("梅雨", RetrievalOptions(k=1, retrieval="lexical")) == []  # pruned

    # a run killed once it wrote chunks: the index is stale, and the next search brings it in step
    _write(docs, {f"more{i}.txt": f"Note {i} about granite and basalt." for i in range(6)})

    def stop(event: object) -> None:
        if getattr(event, "phase", "") == "embedding" and getattr(event, "chunks", 0) > 0:
            raise KeyboardInterrupt

    with pytest.raises(IngestInterrupted):
        pipe.ingest([docs], on_progress=stop)
    assert pipe.lexical.version != pipe.store.version()
    assert not pipe.lexical.is_current(pipe.store)
    pipe.retrieve("granite", RetrievalOptions(retrieval="lexical"))
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()
    pipe.ingest([docs])  # the re-run completes
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()
    assert len(pipe.lexical) == pipe.store.count()
    assert pipe.lexical.is_current(pipe.store)


def test_a_foreign_writer_is_seen_by_the_next_lexical_search(
    pipe: Pipeline, tmp_path: Path
) -> None:
    import chromadb
    from chromadb.config import Settings

    lexical = RetrievalOptions(k=1, retrieval="lexical")
    assert pipe.retrieve("quartz", lexical) == []  # the index is built and current
    assert pipe.lexical.is_current(pipe.store)
    tea = pipe.retrieve("steamed green tea", lexical)[0]
    assert tea.metadata["source"].endswith("tea.txt")

    # plain chromadb on the same folder: no conan-rag write path, no mark_changed()
    client = chromadb.PersistentClient(
        path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False)
    )
    foreign = client.get_collection(pipe.name, embedding_function=None)
    text = "Quartz crystals are made of silicon dioxide."
    meta = {
        **tea.metadata,  # the pipeline's metadata shape, another document's values
        "source": str(tmp_path / "foreign" / "quartz.txt"),
        "doc_id": "quartz",
        "title": "Quartz",
        "chunk_index": 0,
        "char_start": 0,
        "char_end": len(text),
    }
    if "doc_key" in meta:
        meta["doc_key"] = meta["source"]
    vector = pipe.encoder.encode([f"Quartz\n{text}"])[0].astype(np.float32)
    foreign.add(ids=["foreign-quartz"], embeddings=[vector], documents=[text], metadatas=[meta])
    assert not pipe.lexical.is_current(pipe.store)
    hits = pipe.retrieve("quartz", lexical)
    assert [h.id for h in hits] == ["foreign-quartz"]
    assert hits[0].score == pytest.approx(
        float(pipe.encoder.encode(["quartz"], kind="query")[0] @ vector), abs=1e-5
    )  # float32 vectors: a true cosine, also for a chunk another program wrote

    foreign.delete(ids=[tea.id])
    assert not pipe.lexical.is_current(pipe.store)
    found = pipe.retrieve("steamed green tea", RetrievalOptions(k=5, retrieval="lexical"))
    assert tea.id not in [h.id for h in found]
    hybrid = pipe.retrieve("steamed green tea", RetrievalOptions(k=5, retrieval="hybrid"))
    assert tea.id not in [h.id for h in hybrid]
    assert pipe.lexical.is_current(pipe.store)
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()


def test_conan_rag_load_into_a_searched_collection_is_found_by_lexical_search(
    pipe: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conan_rag.cli import main
    from conan_rag.rag.ingest import LocalEngine

    lexical = RetrievalOptions(k=1, retrieval="lexical")
    assert pipe.retrieve("obsidian", lexical) == []  # the index is built and current
    assert pipe.lexical.is_current(pipe.store)

    # an export made elsewhere (single-process engine, Parquet sink), loaded by the CLI
    _write(tmp_path / "more", {"obsidian.txt": "Obsidian is volcanic glass formed by lava."})
    staging = Pipeline(pipe.encoder, db=tmp_path / "staging", collection=pipe.name)
    export = tmp_path / "export"
    report = staging.ingest([tmp_path / "more"], engine=LocalEngine(), to_parquet=export)
    assert (report.added, report.chunks_embedded) == (1, 1)
    assert staging.store.count() == 0  # an export writes files, not the collection
    assert main(["load", str(export), "--db", str(tmp_path / "db"), "--no-progress"]) == 0
    assert "loaded 1 chunks (1 documents completed" in capsys.readouterr().out

    assert not pipe.lexical.is_current(pipe.store)
    hits = pipe.retrieve("obsidian", lexical)
    assert [h.metadata["source"] for h in hits] == [str(tmp_path / "more" / "obsidian.txt")]
    hybrid = pipe.retrieve("obsidian volcanic glass", RetrievalOptions(k=1, retrieval="hybrid"))
    assert hybrid[0].id == hits[0].id
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()
    loaded = pipe.store.get([hits[0].id], ["metadatas"]).metadatas or [{}]
    assert loaded[0]["n_chunks"] == 1  # the load completed the document


def test_an_ingest_updates_the_index_by_delta_reading_only_the_chunks_it_wrote(
    pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lexical = RetrievalOptions(k=1, retrieval="lexical")
    docs = tmp_path / "docs"
    _write(docs, {f"extra{i}.txt": f"Extra note {i} about rivers and lakes." for i in range(20)})
    pipe.ingest([docs])
    assert pipe.retrieve("lakes", lexical)  # the index is built and current
    stored = pipe.store.count()

    # add one, update one (its old chunk deleted): one run, one delta
    _write(docs, {"tea.txt": "Black tea is fully oxidised.", "new.txt": "Quartz is SiO2."})
    reads = Reads(monkeypatch, pipe.store)
    report = pipe.ingest([docs])  # it brings the index in step
    touched = report.chunks_embedded + report.chunks_deleted
    assert (report.added, report.updated, report.chunks_deleted) == (1, 1, 1)
    assert reads.records["scan"] == 0  # the collection is not walked ...
    assert 0 < reads.records["get"] <= touched < stored  # ... only the chunks the run wrote
    assert pipe.retrieve("quartz", lexical)[0].metadata["source"].endswith("new.txt")
    assert reads.records["scan"] == 0
    monkeypatch.undo()
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()
    assert pipe.retrieve("steamed", lexical) == []  # the old text of tea.txt
    assert pipe.lexical.is_current(pipe.store)

    # a plain chromadb write during a run is not one the run can explain: a full sync
    import chromadb
    from chromadb.config import Settings

    def foreign_delete(event: object) -> None:
        if getattr(event, "phase", "") == "embedding" and not deleted:
            deleted.append(gone)
            client = chromadb.PersistentClient(
                path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False)
            )
            client.get_collection(pipe.name, embedding_function=None).delete(ids=[gone])

    gone, deleted = pipe.retrieve("Everest", lexical)[0].id, []
    _write(docs, {"granite.txt": "Granite is an igneous rock."})
    reads = Reads(monkeypatch, pipe.store)
    pipe.ingest([docs], on_progress=foreign_delete)
    assert deleted and not pipe.store.get([gone], ["metadatas"]).ids
    assert reads.records["scan"] == pipe.store.count()  # walked once
    assert pipe.retrieve("granite", lexical)[0].metadata["source"].endswith("granite.txt")
    monkeypatch.undo()
    assert gone not in pipe.lexical.tokens()
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()


def test_a_fresh_process_loads_the_saved_index_without_tokenizing_or_indexing(
    pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bm25s

    from conan_rag.rag.search import lexical_index

    lexical = RetrievalOptions(k=3, retrieval="lexical")
    want = [(h.id, h.lexical_score) for h in pipe.retrieve("Everest 1953 climbed", lexical)]
    assert want and (pipe.lexical.saved_path / "conan_rag_stamp.json").exists()

    calls = {"index": 0, "tokenize": 0}
    real_index, real_many = bm25s.BM25.index, lexical_index.lexical_tokens_many

    def index(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["index"] += 1
        return real_index(self, *args, **kwargs)

    def many(texts):  # type: ignore[no-untyped-def]
        calls["tokenize"] += len(texts)
        return real_many(texts)

    monkeypatch.setattr(bm25s.BM25, "index", index)
    monkeypatch.setattr(lexical_index, "lexical_tokens_many", many)
    fresh = Pipeline(pipe.encoder, db=tmp_path / "db")  # what a new process opens
    got = [(h.id, h.lexical_score) for h in fresh.retrieve("Everest 1953 climbed", lexical)]
    assert got == want
    assert calls == {"index": 0, "tokenize": 0}  # memory-mapped from bm25s's saved files

    # damaged saved matrices (a disk error, a half-copied folder): rebuilt from the tokens
    for name in ("data.csc.index.npy", "conan_rag_stamp.json"):
        target = pipe.lexical.saved_path / name
        target.write_bytes(target.read_bytes()[:20])
        damaged = Pipeline(pipe.encoder, db=tmp_path / "db")
        again = [(h.id, h.lexical_score) for h in damaged.retrieve("Everest 1953 climbed", lexical)]
        assert again == want
        assert calls["tokenize"] == 0 and calls["index"] >= 1  # re-indexed, never re-tokenized


def test_an_index_synced_by_another_instance_reloads_only_its_matrices(
    pipe: Pipeline, tmp_path: Path
) -> None:
    path = tmp_path / "shared" / "lexical.sqlite"
    mine, theirs = LexicalIndex(path), LexicalIndex(path)  # as two processes would
    count = pipe.store.count()
    first = mine.sync(pipe.store)
    assert (first.added, first.removed, first.kept) == (count, 0, 0)
    again = mine.sync(pipe.store)
    assert (again.added, again.removed, again.kept) == (0, 0, count)
    assert mine.is_current(pipe.store)
    _write(tmp_path / "docs", {"quartz.txt": "Quartz is silicon dioxide."})
    pipe.ingest([tmp_path / "docs"])  # the write path marks the store changed
    assert mine.version != pipe.store.version() and not mine.is_current(pipe.store)
    theirs.ensure(pipe.store)  # syncs the shared file
    assert mine.version == pipe.store.version()  # the file is current ...
    assert not mine.is_current(pipe.store)  # ... the matrices in memory are not
    assert mine.search("quartz") == []
    mine.ensure(pipe.store)
    assert mine.is_current(pipe.store) and len(mine) == pipe.store.count() == count + 1
    assert mine.search("quartz") == theirs.search("quartz") != []


def test_a_cross_encoder_reorders_the_best_candidates(pipe: Pipeline, tmp_path: Path) -> None:
    from conan_rag.reranking import load_reranker
    from conan_rag.testing import build_cross_encoder

    # random weights: the order means nothing, the wiring is what is checked
    folder = str(build_cross_encoder(tmp_path / "ce", n_cjk=3000, seed=3))
    question = "Who climbed Everest?"
    plain = pipe.retrieve(question, RetrievalOptions(k=5, retrieval="hybrid"))
    options = RetrievalOptions(k=2, retrieval="hybrid", reranker=folder, rerank_top=4)
    hits = pipe.retrieve(question, options)
    ranked = load_reranker(folder).rank(question, [h.text for h in plain[:4]])
    assert [h.id for h in hits] == [plain[i].id for i, _ in ranked[:2]]
    assert [h.rerank_score for h in hits] == pytest.approx([s for _, s in ranked[:2]])
    assert all(h.fused_score is not None for h in hits)  # what the first stage said stays
    with pytest.raises(conan_rag.ConanConfigError, match="mmr and reranker"):
        RetrievalOptions(mmr=True, reranker=folder)


def test_the_cli_query_takes_the_retrieval_mode_and_a_reranker(
    pipe: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from conan_rag.cli import main
    from conan_rag.testing import build_cross_encoder

    folder = str(build_cross_encoder(tmp_path / "ce", n_cjk=3000, seed=3))
    db = str(pipe.lexical_path.parent.parent)
    args = ["query", "XJ-4471", "--db", db, "--json", "--dtype", "float32", "--device", "cpu"]
    assert main([*args, "--retrieval", "lexical", "--k", "1"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert hit["metadata"]["source"].endswith("code.txt") and hit["lexical_score"] > 0
    assert main([*args, "--retrieval", "hybrid", "--rerank-model", folder]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert all(h["rerank_score"] is not None for h in hits)


def test_readme_hybrid_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from tests.test_readme import ROOT, run, section_blocks

    shutil.copytree(ROOT / "examples" / "corpus", tmp_path / "examples" / "corpus")
    monkeypatch.chdir(tmp_path)
    (block,) = section_blocks("Hybrid retrieval and a cross-encoder")
    best = run(block)["best"]
    assert "smallpox" in best.text.lower() or "vaccin" in best.text.lower()
    assert best.lexical_score is not None and best.fused_score is not None
    assert -1.0 <= best.score <= 1.0


@pytest.mark.server
def test_a_server_collection_gets_a_local_index_in_the_cache(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(request.getfixturevalue("server_url"))  # a real `chroma run` server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _write(tmp_path / "docs", FILES)
    encoder = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")
    pipe = Pipeline(encoder, url=url, collection=f"lexical-{tmp_path.name[-12:]}")
    pipe.ingest([tmp_path / "docs"])
    hits = pipe.retrieve("XJ-4471", RetrievalOptions(k=1, retrieval="hybrid"))
    assert hits[0].metadata["source"].endswith("code.txt")
    port = url.rsplit(":", 1)[1]
    expected = tmp_path / "cache" / "conan_rag" / "lexical" / f"127.0.0.1_{port}"
    assert pipe.lexical_path.parent == expected and pipe.lexical_path.exists()
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()


def _counted(pipe: Pipeline) -> tuple[int, int]:
    """Documents and sources of the collection, counted by reading every chunk."""
    keys, sources = set(), set()
    for page in pipe.store.scan(("metadatas",)):
        for meta in page.metadatas or []:
            keys.add(meta["doc_key"])
            sources.add(meta["source"])
    return len(keys), len(sources)


def test_info_and_a_prune_read_the_catalog_not_the_collection(
    pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, docs = tmp_path / "kept", tmp_path / "notes"
    _write(kept, {f"k{i}.txt": f"Kept note {i} about mountains and glaciers." for i in range(20)})
    _write(docs, {"a.txt": "Alpha comes first.", "b.txt": "Beta comes second."})
    _write(docs / "sub", {"c.txt": "Gamma comes third."})
    _write(tmp_path / "notes-2", {"d.txt": "Delta is beside, not under, notes/."})
    pipe.ingest([kept, docs, tmp_path / "notes-2"])
    first = pipe.info()  # builds the catalog (no lexical index yet), once
    assert (first["documents"], first["sources"]) == _counted(pipe) == (29, 29)
    stored = pipe.store.count()

    reads = Reads(monkeypatch, pipe.store)
    assert pipe.info() == first
    assert reads.records == {"scan": 0, "find": 0, "get": 0}  # counts only: nothing read

    (docs / "b.txt").unlink()
    (docs / "sub" / "c.txt").unlink()
    report = pipe.ingest([docs], prune=True)
    assert (report.deleted, report.unchanged) == (2, 1)
    assert reads.records["scan"] == 0  # the collection is not walked ...
    assert reads.records["find"] <= 3 < stored  # ... only what is stored under notes/
    assert reads.records["get"] <= report.chunks_deleted  # the delta after the deletes
    assert pipe.info()["documents"] == 27
    monkeypatch.undo()
    assert (pipe.info()["documents"], pipe.info()["sources"]) == _counted(pipe) == (27, 27)
    assert pipe.lexical.tokens() == _fresh(pipe, tmp_path).tokens()

    # a foreign write: the catalog sees the version move and reads the collection again
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False)
    )
    client.get_collection(pipe.name, embedding_function=None).delete(
        where={"source": str(tmp_path / "kept" / "k0.txt")}
    )
    assert (pipe.info()["documents"], pipe.info()["sources"]) == _counted(pipe) == (26, 26)


def _hits(index: LexicalIndex, query: str) -> list[tuple[str, float]]:
    return index.search(query, k=100)


def test_over_its_floor_a_write_is_searched_as_a_delta_until_it_passes_its_share(
    pipe: Pipeline, tmp_path: Path
) -> None:
    """The matrices are kept after a small write (a delta beside them), in this process and the
    next; past ``delta_share`` of them they are rebuilt and equal a fresh index exactly."""
    docs = tmp_path / "docs"
    _write(
        docs, {f"n{i}.txt": f"Note {i} on rivers and lakes near hill {i % 7}." for i in range(40)}
    )
    pipe.ingest([docs])
    path = tmp_path / "delta" / "lexical.sqlite"
    index = LexicalIndex(path, delta_share=0.25, delta_min_segment=10)
    index.ensure(pipe.store)
    built = index.layout()
    assert built == {"segment": 45, "masked": 0, "delta": 0, "built_at": built["built_at"]}

    _write(docs, {"tea.txt": "Black tea is fully oxidised.", "quartz.txt": "Quartz is SiO2."})
    pipe.ingest([docs])  # one chunk re-written, one added
    index.ensure(pipe.store)
    assert index.layout() == {**built, "masked": 1, "delta": 2}  # the matrices were kept
    assert _hits(index, "quartz")[0][0] in pipe.store.find({"source": str(docs / "quartz.txt")}).ids
    assert _hits(index, "steamed") == []  # tea.txt's old text is masked out
    fresh = _fresh(pipe, tmp_path)
    for query in ("rivers lakes", "hill 3", "Everest", "oxidised tea"):
        assert {i for i, _ in _hits(index, query)} == {i for i, _ in _hits(fresh, query)}, query

    again = LexicalIndex(path, delta_share=0.25, delta_min_segment=10)  # a new process
    again.ensure(pipe.store)
    assert again.layout() == index.layout()  # the saved matrices and the logged changes
    assert _hits(again, "rivers lakes hill") == _hits(index, "rivers lakes hill")

    _write(docs, {f"m{i}.txt": f"Marsh {i} with reeds and herons." for i in range(12)})
    pipe.ingest([docs])  # 12 more: 14 changed > 25 % of 45
    index.ensure(pipe.store)
    layout = index.layout()
    assert (layout["segment"], layout["delta"]) == (pipe.store.count(), 0)  # rebuilt
    assert layout["built_at"] > built["built_at"]
    fresh = _fresh(pipe, tmp_path)
    for query in ("rivers lakes", "marsh reeds", "oxidised tea", "quartz"):
        assert _hits(index, query) == _hits(fresh, query), query


def test_a_search_during_a_live_run_answers_as_of_its_start_then_applies_it_by_delta(
    pipe: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a writer is mid-run, searches neither read its half-written run nor re-sync after
    each of its writes; once it closes, its chunks are applied by delta."""
    from conan_rag.rag.ingest.report import IngestReport
    from conan_rag.rag.ingest.sink import StoreSink

    lexical = RetrievalOptions(k=1, retrieval="lexical")
    assert pipe.retrieve("Everest", lexical)  # the index is built
    synced = pipe.lexical.version
    sink = StoreSink(pipe.store)
    text = "Quartz is SiO2."
    meta = {"source": "/elsewhere/quartz.txt", "doc_key": "quartz", "doc_id": "quartz"}
    sink.upsert(["quartz-0"], pipe.encoder.encode([text]), [text], [meta])  # the run is open
    reads = Reads(monkeypatch, pipe.store)
    assert pipe.retrieve("quartz", lexical) == []  # as of the run's start: a committed state
    assert pipe.retrieve("Everest", lexical)
    assert reads.records["scan"] == 0 and pipe.lexical.version == synced  # no sync meanwhile
    sink.finish(IngestReport())
    assert [h.id for h in pipe.retrieve("quartz", lexical)] == ["quartz-0"]
    assert reads.records["scan"] == 0  # applied by delta: only the run's chunk was read
    assert pipe.lexical.is_current(pipe.store)


def test_a_run_is_writing_only_while_its_writer_lives_and_has_not_finished_or_failed(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from conan_rag.rag.search.changes import ChangeLog, read_run

    path = tmp_path / "lexical.sqlite"
    live = ChangeLog(path, "g1", base="b")
    assert read_run(path, "g1").writing  # type: ignore[union-attr]
    live.abandon()  # an ingest that failed or was stopped
    assert not read_run(path, "g1").writing  # type: ignore[union-attr]
    ChangeLog(path, "g2", base="b").close()
    assert not read_run(path, "g2").writing  # type: ignore[union-attr]
    code = "import sys, pathlib; from conan_rag.rag.search.changes import ChangeLog; "
    code += "ChangeLog(pathlib.Path(sys.argv[1]), 'g3', base='b')"  # then the process ends
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300)
    run = read_run(path, "g3")
    assert run is not None and not run.closed and not run.writing  # its writer is gone


def test_two_machines_on_one_chroma_server_each_keep_an_index_that_follows_the_other(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each machine's index lives in its own user cache; B sees A's ingest at its next search,
    re-tokenizing only the chunks A wrote (B reads every chunk's text: it has no run notes)."""
    from conan_rag.rag.search import lexical_index

    url = str(request.getfixturevalue("server_url"))  # a real `chroma run` server
    encoder = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")
    name = f"two-machines-{tmp_path.name[-12:]}"
    machines = {}
    for machine in ("a", "b"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache-{machine}"))
        machines[machine] = Pipeline(encoder, url=url, collection=name)
    a, b = machines["a"], machines["b"]
    assert a.lexical_path != b.lexical_path
    docs = tmp_path / "docs"
    _write(docs, FILES)
    a.ingest([docs])
    lexical = RetrievalOptions(k=1, retrieval="lexical")
    assert [h.id for h in b.retrieve("XJ-4471", lexical)] == [
        h.id for h in a.retrieve("XJ-4471", lexical)
    ]

    tokenized: list[int] = []
    real = lexical_index.lexical_tokens_many
    monkeypatch.setattr(
        lexical_index,
        "lexical_tokens_many",
        lambda texts: tokenized.append(len(texts)) or real(texts),
    )
    _write(docs, {"quartz.txt": "Quartz is SiO2."})
    a.ingest([docs])  # machine A writes one chunk
    tokenized.clear()
    assert b.retrieve("quartz", lexical)[0].metadata["source"].endswith("quartz.txt")
    assert sum(tokenized) == 1  # B re-tokenized only A's new chunk
    assert b.lexical.tokens() == a.lexical.tokens() == _fresh(a, tmp_path).tokens()
