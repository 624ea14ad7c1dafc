"""``conan-rag serve --collection``: the hits of ``Pipeline.retrieve``, over HTTP, from a process.

One real server process over a real embedded collection (all-MiniLM-L6-v2, float32 on both
sides, so the scores agree to 1e-5 on any CPU).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conan_rag import load_encoder
from conan_rag.rag.pipeline import Pipeline
from conan_rag.rag.search.retrieval import RetrievalOptions
from conan_rag.testing import start_serve_process
from tests.pipeline_helpers import fact_docs

QUERIES = ["Which city is the capital of France?", "red planet", "北京的故宫", "tea leaves"]
MODES = ("dense", "lexical", "hybrid")
NAME = "served-facts"


@pytest.fixture(scope="module")
def collection(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The collection and what ``Pipeline.retrieve`` answers on it, per mode."""
    db = tmp_path_factory.mktemp("served") / "db"
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    pipe = Pipeline(encoder, db=db, collection=NAME)
    pipe.ingest(fact_docs())
    want = {
        mode: pipe.retrieve_many(QUERIES, RetrievalOptions(k=3, retrieval=mode)) for mode in MODES
    }
    return {"db": db, "want": want, "chunks": pipe.collection.count()}


@pytest.fixture(scope="module")
def url(collection: dict[str, Any]) -> Iterator[str]:
    """A server searching the collection, with the model the collection records."""
    args = ["--port", "0", "--device", "cpu", "--dtype", "float32"]
    proc, base = start_serve_process([*args, "--collection", NAME, "--db", str(collection["db"])])
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(60)


def _retrieve(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/retrieve", json=body, timeout=120)


def test_the_server_answers_the_hits_of_pipeline_retrieve(
    url: str, collection: dict[str, Any]
) -> None:
    for mode in MODES:
        answer = _retrieve(url, {"query": QUERIES, "options": {"k": 3, "retrieval": mode}})
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        assert [item["query"] for item in data] == QUERIES
        for item, want in zip(data, collection["want"][mode], strict=True):
            got = item["hits"]
            assert [h["id"] for h in got] == [h.id for h in want], (mode, item["query"])
            for served, local in zip(got, want, strict=True):
                assert abs(served["score"] - local.score) < 1e-5
                assert served["text"] == local.text and served["metadata"] == local.metadata
                if mode != "dense":
                    assert served["fused_score"] == pytest.approx(local.fused_score, abs=1e-9)
    one = _retrieve(url, {"query": QUERIES[0]}).json()["data"][0]["hits"]
    assert one[0]["metadata"]["doc_id"] == "paris"  # a single query, default options


def test_collections_and_refusals_name_the_fix(url: str, collection: dict[str, Any]) -> None:
    listed = httpx.get(f"{url}/v1/collections", timeout=60).json()["data"]
    assert [(c["name"], c["chunks"]) for c in listed] == [(NAME, collection["chunks"])]
    assert listed[0]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    cases = {
        "an empty query": ({"query": "  "}, "empty"),
        "an unknown option": ({"query": "x", "options": {"kk": 3}}, "kk"),
        "a bad mode": ({"query": "x", "options": {"retrieval": "fuzzy"}}, "hybrid"),
        "a reranker": ({"query": "x", "options": {"reranker": "/etc"}}, "Omit it"),
        "no query": ({"options": {}}, "query is required"),
    }
    for case, (body, fix) in cases.items():
        answer = _retrieve(url, body)
        assert answer.status_code == 400, (case, answer.text)
        assert fix in answer.json()["error"]["message"], (case, answer.text)


def test_an_unknown_collection_is_refused_before_serving(collection: dict[str, Any]) -> None:
    command = [sys.executable, "-m", "conan_rag.cli", "serve", "--port", "0"]
    refused = subprocess.run(
        [*command, "--collection", "nope", "--db", str(collection["db"])],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only
    )
    assert refused.returncode == 2, refused.stderr
    assert "No collection 'nope' in this store" in refused.stderr
    assert NAME in refused.stderr  # the message lists what the store holds


def test_the_adapters_search_the_server_with_no_model_here(
    url: str, collection: dict[str, Any]
) -> None:
    """``ServedCollection`` in place of a pipeline: LangChain's and LlamaIndex's retrievers."""
    from langchain_conan import ConanRetriever as LangChainRetriever
    from llama_index.retrievers.conan import ConanRetriever as LlamaRetriever

    from conan_rag.rag import ServedCollection

    served = ServedCollection(url)
    assert served.name == NAME and served.model_id.endswith("all-MiniLM-L6-v2")
    for mode in MODES:
        options = RetrievalOptions(k=3, retrieval=mode)
        for got, want in zip(served.retrieve_many(QUERIES, options), collection["want"][mode]):
            assert [h.id for h in got] == [h.id for h in want], mode
            assert max(abs(a.score - b.score) for a, b in zip(got, want)) < 1e-5
    want = collection["want"]["hybrid"][0]
    options = {"k": 3, "retrieval": "hybrid"}
    docs = LangChainRetriever(pipeline=served, options=options).invoke(QUERIES[0])
    assert [d.id for d in docs] == [h.id for h in want]
    assert abs(docs[0].metadata["score"] - want[0].score) < 1e-5
    nodes = LlamaRetriever(served, options=options).retrieve(QUERIES[0])
    assert [n.node.node_id for n in nodes] == [h.id for h in want]
