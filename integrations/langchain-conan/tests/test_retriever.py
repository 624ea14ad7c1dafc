"""ConanRetriever over a real Pipeline (embedded Chroma, bundled all-MiniLM-L6-v2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conan_rag import ConanConfigError, load_encoder
from conan_rag.rag import Document as Doc
from conan_rag.rag import Pipeline
from conan_rag.rag import RetrievalOptions as Options
from pydantic import ValidationError

from langchain_conan.retrievers import ConanRetriever

FACTS = {
    "paris": "Paris is the capital of France.",
    "paris2": "The capital city of France is Paris.",
    "wine": "France is famous for wine regions such as Bordeaux.",
    "mars": "Mars is the fourth planet from the Sun.",
}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Pipeline:
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    pipeline = Pipeline(encoder, db=tmp_path_factory.mktemp("db"), collection="retriever")
    pipeline.ingest([Doc(key, text, "facts") for key, text in FACTS.items()])
    return pipeline


def test_scores_are_cosine_and_match_the_pipeline(pipe: Pipeline) -> None:
    docs = ConanRetriever(pipeline=pipe, options=Options(k=3)).invoke(
        "What is the capital of France?"
    )
    hits = pipe.retrieve("What is the capital of France?", Options(k=3))
    assert [d.id for d in docs] == [h.id for h in hits]
    assert docs[0].metadata["doc_id"] in {"paris", "paris2"}
    q = pipe.encoder.encode(["What is the capital of France?"], kind="query")[0]
    for doc in docs:
        vector = pipe.encoder.encode([doc.page_content])[0]
        assert doc.metadata["score"] == pytest.approx(float(np.dot(q, vector)), abs=1e-5)


def test_threshold_filter_and_mmr(pipe: Pipeline) -> None:
    all_docs = ConanRetriever(pipeline=pipe, options=Options(k=4)).invoke("capital of France")
    cut = (all_docs[1].metadata["score"] + all_docs[2].metadata["score"]) / 2
    kept = ConanRetriever(pipeline=pipe, options=Options(k=4, threshold=cut)).invoke(
        "capital of France"
    )
    assert len(kept) == 2 and all(d.metadata["score"] >= cut for d in kept)
    only = ConanRetriever(pipeline=pipe, options=Options(where={"doc_id": "mars"})).invoke(
        "capital of France"
    )
    assert [d.metadata["doc_id"] for d in only] == ["mars"]
    diverse = ConanRetriever(pipeline=pipe, options=Options(k=2, mmr=True, lambda_mult=0.3)).invoke(
        "capital of France"
    )
    assert {d.metadata["doc_id"] for d in diverse} != {"paris", "paris2"}


def test_async_and_validation(pipe: Pipeline) -> None:
    docs = asyncio.run(ConanRetriever(pipeline=pipe, options=Options(k=1)).ainvoke("red planet"))
    assert docs[0].metadata["doc_id"] == "mars"
    with pytest.raises(ConanConfigError, match="threshold"):
        ConanRetriever(pipeline=pipe, options=Options(threshold=1.5))
    with pytest.raises(ValidationError):
        ConanRetriever(pipeline=pipe, k=3)  # options go in `options`: a typo fails loudly
    from_dict = ConanRetriever(pipeline=pipe, options={"k": 1, "threshold": 0.2})
    assert from_dict.options == Options(k=1, threshold=0.2)  # a dict is read as the options
    with pytest.raises((ConanConfigError, ValidationError), match="k must be"):
        ConanRetriever(pipeline=pipe, options={"k": 0})


CODES = {
    "code": "Error XK-4471 means the coolant pump overheated; stop the unit.",
    "pump": "Pumps overheat when the coolant level is low or a valve is stuck.",
    "zh": "水泵过热时应立即停机检查冷却液。",
}


@pytest.fixture(scope="module")
def code_pipe(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Pipeline:
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    pipeline = Pipeline(encoder, db=tmp_path_factory.mktemp("db"), collection="codes")
    pipeline.ingest([Doc(key, text, "manual") for key, text in {**FACTS, **CODES}.items()])
    return pipeline


def test_hybrid_mode_from_a_dict_carries_lexical_and_fused_scores(code_pipe: Pipeline) -> None:
    retriever = ConanRetriever(pipeline=code_pipe, options={"retrieval": "hybrid", "k": 2})
    assert retriever.options == Options(retrieval="hybrid", k=2)
    docs = retriever.invoke("XK-4471")
    hits = code_pipe.retrieve("XK-4471", Options(retrieval="hybrid", k=2))
    assert docs[0].metadata["doc_id"] == "code"
    assert [d.id for d in docs] == [h.id for h in hits]
    for doc, hit in zip(docs, hits, strict=True):
        assert doc.metadata["score"] == hit.score  # still the true cosine
        assert doc.metadata["lexical_score"] == hit.lexical_score
        assert doc.metadata["fused_score"] == hit.fused_score
        assert "rerank_score" not in doc.metadata
    assert docs[0].metadata["lexical_score"] > 0
    dense = ConanRetriever(pipeline=code_pipe, options={"k": 2}).invoke("XK-4471")
    assert not {"lexical_score", "fused_score"} & set(dense[0].metadata)
    lexical = ConanRetriever(
        pipeline=code_pipe, options={"retrieval": "lexical", "weights": [1, 2]}
    ).invoke("冷却液")
    assert lexical[0].metadata["doc_id"] == "zh"


def test_reranker_option_orders_by_the_cross_encoder(
    code_pipe: Pipeline, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from conan_rag.testing import build_cross_encoder

    folder = str(build_cross_encoder(tmp_path_factory.mktemp("ce"), n_cjk=3000, seed=1))
    options = {"retrieval": "hybrid", "k": 3, "reranker": folder, "rerank_top": 5}
    docs = ConanRetriever(pipeline=code_pipe, options=options).invoke("pump overheated")
    hits = code_pipe.retrieve("pump overheated", Options(**options))
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.metadata["rerank_score"] for d in docs] == [h.rerank_score for h in hits]
    scores = [d.metadata["rerank_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_an_unknown_option_key_is_refused_naming_the_valid_ones(pipe: Pipeline) -> None:
    with pytest.raises((ConanConfigError, ValidationError), match=r"retreival.*valid options"):
        ConanRetriever(pipeline=pipe, options={"retreival": "hybrid"})
    with pytest.raises((ConanConfigError, ValidationError), match="retrieval must be one of"):
        ConanRetriever(pipeline=pipe, options={"retrieval": "sparse"})
