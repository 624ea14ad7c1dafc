"""ConanRetriever (LlamaIndex) over a real Pipeline: modes, scores, metadata, async, engines.

The pipeline is an embedded Chroma store in a temporary folder with the bundled
all-MiniLM-L6-v2 (float32 on CPU) over a few English and Chinese texts; the cross-encoder is a
small random-weight folder, so reranked orders are compared with the core reranker, never with
expected documents.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conan_rag import ConanConfigError, ConanInputError, load_encoder, load_reranker
from conan_rag.rag import Document as Doc
from conan_rag.rag import Pipeline, RetrievalOptions
from conan_rag.testing import build_cross_encoder
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, TextNode

from llama_index.retrievers.conan import ConanRetriever

TEXTS = {
    "code": "Error XK-4471 means the coolant pump overheated; stop the unit at once.",
    "pump": "Pumps overheat when the coolant level is low or a valve is stuck.",
    "paris": "Paris is the capital of France.",
    "beijing": "北京是中华人民共和国的首都，也是政治和文化中心。",
    "wall": "长城是中国古代的军事防御工程，全长两万多公里。",
    "tea": "绿茶是中国最常见的茶类，龙井产于杭州西湖。",
}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Pipeline:
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    pipeline = Pipeline(encoder, db=tmp_path_factory.mktemp("db"), collection="llama")
    pipeline.ingest([Doc(key, text, "manual") for key, text in TEXTS.items()])
    return pipeline


@pytest.fixture(scope="module")
def reranker_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_cross_encoder(tmp_path_factory.mktemp("ce"), n_cjk=3000, seed=11))


def test_dense_nodes_match_the_pipeline_with_cosine_scores(pipe: Pipeline) -> None:
    retriever = ConanRetriever(pipe, options=RetrievalOptions(k=3))
    found = retriever.retrieve("What is the capital of France?")
    hits = pipe.retrieve("What is the capital of France?", RetrievalOptions(k=3))
    assert [n.node_id for n in found] == [h.id for h in hits]
    assert [n.text for n in found] == [h.text for h in hits]
    assert [n.score for n in found] == [h.score for h in hits]  # the true cosine
    assert found[0].metadata["doc_id"] == "paris"
    assert found[0].metadata["score"] == found[0].score
    assert not {"lexical_score", "fused_score", "rerank_score"} & set(found[0].metadata)
    assert all(isinstance(n.node, TextNode) for n in found)


def test_hybrid_finds_an_exact_code_term(pipe: Pipeline) -> None:
    retriever = ConanRetriever(pipe, options={"retrieval": "hybrid", "k": 3})
    assert retriever.options == RetrievalOptions(retrieval="hybrid", k=3)
    found = retriever.retrieve("XK-4471")
    hits = pipe.retrieve("XK-4471", RetrievalOptions(retrieval="hybrid", k=3))
    assert found[0].metadata["doc_id"] == "code"
    assert [n.node_id for n in found] == [h.id for h in hits]
    for node, hit in zip(found, hits, strict=True):
        assert node.score == node.metadata["score"] == hit.score  # still the true cosine
        assert node.metadata["lexical_score"] == hit.lexical_score
        assert node.metadata["fused_score"] == hit.fused_score
    assert found[0].metadata["lexical_score"] > 0


def test_lexical_mode_finds_chinese_words(pipe: Pipeline) -> None:
    retriever = ConanRetriever(pipe, options={"retrieval": "lexical", "k": 2})
    assert retriever.retrieve("长城有多长")[0].metadata["doc_id"] == "wall"
    assert retriever.retrieve("龙井")[0].metadata["doc_id"] == "tea"
    hybrid = ConanRetriever(pipe, options={"retrieval": "hybrid", "weights": [0.5, 1.0]})
    assert hybrid.options.weights == (0.5, 1.0)
    assert hybrid.retrieve("中国的首都")[0].metadata["doc_id"] == "beijing"


def test_reranked_scores_are_the_cross_encoders(pipe: Pipeline, reranker_folder: str) -> None:
    options = {"retrieval": "hybrid", "k": 4, "reranker": reranker_folder, "rerank_top": 2}
    found = ConanRetriever(pipe, options=options).retrieve("pump overheated")
    hits = pipe.retrieve("pump overheated", RetrievalOptions(**options))
    assert [n.node_id for n in found] == [h.id for h in hits]
    assert [n.score for n in found] == [h.rerank_score for h in hits]
    assert [n.metadata["rerank_score"] for n in found] == [h.rerank_score for h in hits]
    assert [n.metadata["score"] for n in found] == [h.score for h in hits]
    assert found[0].score is not None and found[1].score is not None
    assert found[2].score is None and found[3].score is None  # past rerank_top: not re-scored
    ranked = load_reranker(reranker_folder).rank("pump overheated", [h.text for h in hits[:2]])
    assert [s for _, s in ranked] == [n.score for n in found[:2]]


def test_metadata_modes_hide_scores_and_bookkeeping(pipe: Pipeline) -> None:
    node = ConanRetriever(pipe, options={"retrieval": "hybrid", "k": 1}).retrieve("XK-4471")[0]
    assert node.node.get_content(metadata_mode=MetadataMode.EMBED) == node.text
    llm_view = node.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "doc_id: code" in llm_view and "source: manual" in llm_view
    for hidden in ("score", "lexical_score", "fused_score", "doc_hash", "char_start"):
        assert f"{hidden}:" not in llm_view
    assert {"doc_hash", "char_start", "fused_score"} <= set(node.metadata)


def test_options_are_checked(pipe: Pipeline) -> None:
    with pytest.raises(ConanConfigError, match=r"retreival.*valid options"):
        ConanRetriever(pipe, options={"retreival": "hybrid"})
    with pytest.raises(ConanConfigError, match="retrieval must be one of"):
        ConanRetriever(pipe, options={"retrieval": "sparse"})
    with pytest.raises(ConanConfigError, match="RetrievalOptions or a dict"):
        ConanRetriever(pipe, options=[("k", 2)])  # type: ignore[arg-type]
    with pytest.raises(ConanConfigError, match="Pipeline"):
        ConanRetriever("not a pipeline")  # type: ignore[arg-type]
    assert ConanRetriever(pipe).options == RetrievalOptions()
    assert "hybrid" in repr(ConanRetriever(pipe, options={"retrieval": "hybrid"}))
    with pytest.raises(ConanInputError):
        ConanRetriever(pipe).retrieve("   ")


async def test_aretrieve_matches_retrieve(pipe: Pipeline) -> None:
    retriever = ConanRetriever(pipe, options={"retrieval": "hybrid", "k": 3})
    queries = ["XK-4471", "长城", "capital of France"]
    together = await asyncio.gather(*(retriever.aretrieve(q) for q in queries))
    for query, got in zip(queries, together, strict=True):
        want = retriever.retrieve(query)
        assert [n.node_id for n in got] == [n.node_id for n in want]
        # Concurrent queries may share a model batch: float32 rounding then differs by ~1e-8.
        assert [n.score for n in got] == pytest.approx([n.score for n in want], abs=1e-6)


def test_in_a_query_engine_with_the_conan_reranker(pipe: Pipeline, reranker_folder: str) -> None:
    retriever = ConanRetriever(pipe, options={"retrieval": "hybrid", "k": 5})
    candidates = [n.text for n in retriever.retrieve("coolant pump")]
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    assert [n.text for n in engine.query("coolant pump").source_nodes] == candidates
    postprocessor = pytest.importorskip("llama_index.postprocessor.conan_rerank")
    rerank = postprocessor.ConanRerank(reranker_folder, device="cpu", top_n=2)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[rerank])
    response = engine.query("coolant pump")
    ranked = rerank.reranker.rank("coolant pump", candidates, top_k=2)
    assert [n.text for n in response.source_nodes] == [candidates[i] for i, _ in ranked]
    assert [n.score for n in response.source_nodes] == [s for _, s in ranked]
