"""``conan-rag serve --collection``: the hits of ``Pipeline.retrieve``, over HTTP, from a process.

One real server process over a real embedded collection (`conftest.py`: all-MiniLM-L6-v2,
float32 on both sides, so the scores agree to 1e-5 on any CPU).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest

from conan_rag.rag.evaluation import sweep_json
from conan_rag.rag.search.retrieval import RetrievalOptions
from tests.server.conftest import MODES, NAME, QUERIES, SWEEP


def _retrieve(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/retrieve", json=body, timeout=120)


def test_the_server_answers_the_hits_of_pipeline_retrieve(
    served_url: str, collection: dict[str, Any]
) -> None:
    for mode in MODES:
        answer = _retrieve(served_url, {"query": QUERIES, "options": {"k": 3, "retrieval": mode}})
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
    one = _retrieve(served_url, {"query": QUERIES[0]}).json()["data"][0]["hits"]
    assert one[0]["metadata"]["doc_id"] == "paris"  # a single query, default options


def test_collections_and_refusals_name_the_fix(served_url: str, collection: dict[str, Any]) -> None:
    listed = httpx.get(f"{served_url}/v1/collections", timeout=60).json()["data"]
    assert [(c["name"], c["chunks"]) for c in listed] == [(NAME, collection["chunks"])]
    assert listed[0]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert listed[0]["sweep"]["rows"] == sweep_json(SWEEP)  # nothing kept at 0.9: nulls
    cases = {
        "an empty query": ({"query": "  "}, "empty"),
        "an unknown option": ({"query": "x", "options": {"kk": 3}}, "kk"),
        "a bad mode": ({"query": "x", "options": {"retrieval": "fuzzy"}}, "hybrid"),
        "a reranker": ({"query": "x", "options": {"reranker": "/etc"}}, "Omit it"),
        "no query": ({"options": {}}, "query is required"),
        "a k over the limit": ({"query": "x", "options": {"k": 1001}}, "--max-k"),
        "a fetch_k over it": ({"query": "x", "options": {"k": 2, "fetch_k": 5000}}, "--max-k"),
    }
    for case, (body, fix) in cases.items():
        answer = _retrieve(served_url, body)
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
    served_url: str, collection: dict[str, Any]
) -> None:
    """``ServedCollection`` in place of a pipeline: LangChain's and LlamaIndex's retrievers."""
    from langchain_conan import ConanRetriever as LangChainRetriever
    from llama_index.retrievers.conan import ConanRetriever as LlamaRetriever

    from conan_rag.rag import ServedCollection

    served = ServedCollection(served_url)
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
