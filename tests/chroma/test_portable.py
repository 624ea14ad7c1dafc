"""Chroma records that travel: what a collection records, who may reopen it, and on what device.

Vectors from two processes are compared in float32 (pinned with ``--dtype float32`` and
``CONAN_RAG_DTYPE=float32``), on every CPU, whether or not it has native bf16.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
import torch
from chromadb.api.client import SharedSystemClient

import conan_rag
from conan_rag.chroma import ConanEmbeddingFunction
from conan_rag.cli import main
from conan_rag.config import EncoderConfig
from conan_rag.errors import CollectionMismatchError
from conan_rag.rag import Pipeline, RetrievalOptions

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FACTS = {
    "everest.txt": "Tenzing Norgay and Edmund Hillary first climbed Mount Everest in 1953.",
    "paris.txt": "Paris is the capital of France; the Eiffel Tower stands there.",
    "cells.txt": "Mitochondria turn nutrients into the energy a cell runs on.",
}
QUESTION = "Who first reached the top of Everest?"
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CONAN_RAG_DTYPE": "float32",
}

PLAIN_CHROMA = textwrap.dedent(
    """
    import json, sys
    import chromadb
    client = chromadb.PersistentClient(path=sys.argv[1])
    out = {}
    try:  # without conan-rag imported, Chroma cannot rebuild the embedding function
        client.get_collection(sys.argv[2]).query(query_texts=[sys.argv[3]], n_results=1)
    except Exception as exc:
        out["without_import"] = f"{type(exc).__name__}: {exc}"
    import conan_rag.chroma
    col = client.get_collection(sys.argv[2])
    got = col.query(query_texts=[sys.argv[3]], n_results=3, include=["distances"])
    ef = col.configuration["embedding_function"]
    out.update(ids=got["ids"][0], distances=got["distances"][0], device=ef.encoder.device,
               dtype=ef.encoder.dtype, config=ef.get_config())
    print("RESULT" + json.dumps(out))
    """
)


def plain_chroma(db: Path, collection: str, query: str) -> dict[str, Any]:
    """Query a collection by text in a fresh process that uses chromadb's own API only."""
    return _run_script(PLAIN_CHROMA, str(db), collection, query)


def _run_script(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; return what it printed after ``RESULT``."""
    SharedSystemClient.clear_system_cache()  # release the database first
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return dict(json.loads(line.removeprefix("RESULT")))


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store filled by the conan-rag command, float32 pinned."""
    root = tmp_path_factory.mktemp("portable")
    docs = root / "docs"
    docs.mkdir()
    for name, text in FACTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    db = root / "db"
    args = ["--db", str(db), "--model", MINILM, "--dtype", "float32", "--no-progress"]
    assert main(["ingest", str(docs), *args]) == 0
    return db


def test_a_cli_collection_answers_plain_chromadb_query_texts(cli_db: Path) -> None:
    out = plain_chroma(cli_db, "conan_rag", QUESTION)
    # What Chroma says without the import is what README explains.
    assert "Embedding function conan-rag not found" in out["without_import"]
    encoder = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")
    hits = Pipeline(encoder, db=cli_db, create=False).retrieve(QUESTION, RetrievalOptions(k=3))
    assert out["config"]["model"] == MINILM and out["dtype"] == "float32"
    assert out["ids"] == [h.id for h in hits]
    assert hits[0].metadata["source"].endswith("everest.txt")
    # Chroma's cosine distance is 1 - the cosine the pipeline reports.
    np.testing.assert_allclose(out["distances"], [1 - h.score for h in hits], atol=1e-5)


def _rewrite_recorded_config(db: Path, change: dict[str, Any]) -> None:
    """Edit the embedding function config a collection records (as another version wrote it)."""
    SharedSystemClient.clear_system_cache()
    with sqlite3.connect(db / "chroma.sqlite3") as conn:
        (schema,) = conn.execute("SELECT schema_str FROM collections").fetchone()

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                if node.get("name") == "conan-rag" and isinstance(node.get("config"), dict):
                    return {**node, "config": change}
                return {k: walk(v) for k, v in node.items()}
            return [walk(v) for v in node] if isinstance(node, list) else node

        rewritten = json.dumps(walk(json.loads(schema)))
        assert rewritten.count('"device": "cuda"') >= 1
        conn.execute("UPDATE collections SET schema_str = ?", (rewritten,))


def test_a_collection_recorded_on_cuda_by_0_2_opens_on_this_cpu(tmp_path: Path) -> None:
    ef = ConanEmbeddingFunction(MINILM, device="cpu", dtype="float32")
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    col = client.create_collection("facts", embedding_function=ef)
    col.add(ids=list(FACTS), documents=list(FACTS.values()))
    want = col.query(query_texts=[QUESTION], n_results=3, include=["distances"])
    del col, client
    # conan-rag 0.2 recorded the whole EncoderConfig, device and dtype included.
    legacy = EncoderConfig(model=MINILM, device="cuda", dtype="float16", token_budget=65536)
    _rewrite_recorded_config(tmp_path / "db", legacy.to_dict())
    out = plain_chroma(tmp_path / "db", "facts", QUESTION)
    assert (out["device"], out["dtype"]) == ("cpu", "float32")
    assert out["ids"] == want["ids"][0]
    np.testing.assert_allclose(out["distances"], want["distances"][0], atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to record on")
def test_a_collection_made_on_cuda_records_no_device(tmp_path: Path) -> None:
    ef = ConanEmbeddingFunction(MINILM, device="cuda")
    assert "device" not in ef.get_config() and "dtype" not in ef.get_config()
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    client.create_collection("facts", embedding_function=ef).add(
        ids=list(FACTS), documents=list(FACTS.values())
    )
    del client
    env_cpu = {**ENV, "CUDA_VISIBLE_DEVICES": "", "CONAN_RAG_DEVICE": "cpu"}
    SharedSystemClient.clear_system_cache()
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_CHROMA, str(tmp_path / "db"), "facts", QUESTION],
        capture_output=True,
        text=True,
        env=env_cpu,
        timeout=300,
        check=True,
    )
    assert '"device": "cpu"' in proc.stdout and "everest" in proc.stdout


@pytest.fixture
def collection(tmp_path: Path) -> chromadb.api.ClientAPI:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    ef = ConanEmbeddingFunction(MINILM, device="cpu", dtype="float32", query_prompt="query: ")
    client.create_collection("facts", embedding_function=ef).add(
        ids=list(FACTS), documents=list(FACTS.values())
    )
    return client


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"query_prompt": None}, "query_prompt='query: '"),
        ({"query_prompt": "query: ", "truncate_dim": 128}, "truncate_dim=None"),
        ({"query_prompt": "query: ", "normalize": False}, "normalize=True"),
    ],
)
def test_reopening_with_other_vector_settings_is_refused(
    collection: chromadb.api.ClientAPI, change: dict[str, Any], named: str
) -> None:
    other = ConanEmbeddingFunction(MINILM, device="cpu", dtype="float32", **change)
    for open_it in (collection.get_collection, collection.get_or_create_collection):
        with pytest.raises(conan_rag.ConanConfigError, match=named):
            open_it("facts", embedding_function=other)
    assert collection.get_collection("facts").count() == len(FACTS)  # nothing lost


def test_reopening_on_another_device_or_dtype_is_allowed(
    collection: chromadb.api.ClientAPI,
) -> None:
    same = ConanEmbeddingFunction(MINILM, device="cpu", dtype="bfloat16", query_prompt="query: ")
    col = collection.get_collection("facts", embedding_function=same)
    assert col.query(query_texts=[QUESTION], n_results=1)["ids"] == [["everest.txt"]]


def test_device_and_dtype_of_a_rebuilt_function_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = ConanEmbeddingFunction(MINILM, device="cpu", dtype="float32").get_config()
    monkeypatch.setenv("CONAN_RAG_DEVICE", "cpu")
    monkeypatch.setenv("CONAN_RAG_DTYPE", "bfloat16")
    assert ConanEmbeddingFunction.build_from_config(stored).encoder.dtype == "bfloat16"
    monkeypatch.setenv("CONAN_RAG_DEVICE", "tpu")
    with pytest.raises(conan_rag.ConanConfigError, match="Unknown device 'tpu'"):
        ConanEmbeddingFunction.build_from_config(stored)


def test_other_model_files_than_recorded_are_refused() -> None:
    stored = ConanEmbeddingFunction(MINILM, device="cpu").get_config()
    with pytest.raises(CollectionMismatchError, match="other model files"):
        ConanEmbeddingFunction.build_from_config({**stored, "fingerprint": "0123456789abcdef"})


@pytest.mark.parametrize("device", ["mps", "cuda:7"])
def test_an_absent_device_is_a_clear_error(device: str) -> None:
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    with pytest.raises(conan_rag.ConanConfigError, match="device='auto' or 'cpu'|does not exist"):
        conan_rag.load_encoder(MINILM, device=device)


# A new user's scripts: open a collection `conan-rag ingest` built through langchain-chroma or
# LlamaIndex with the conan-rag adapter, and nothing else of conan-rag imported. Chroma rebuilds
# the recorded "conan-rag" function for relevance scores, `configuration` and adds.
THROUGH_LANGCHAIN = textwrap.dedent(
    """
    import json, sys, warnings
    from langchain_chroma import Chroma
    from langchain_conan import ConanEmbeddings
    emb = ConanEmbeddings(model=sys.argv[2], device="cpu")
    store = Chroma("conan_rag", embedding_function=emb, persist_directory=sys.argv[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scored = store.similarity_search_with_relevance_scores(sys.argv[3], k=2)
        store.add_texts(["Bananas are yellow and rich in potassium."], ids=["banana"])
    out = {
        "hits": [d.metadata["source"] for d in store.similarity_search(sys.argv[3], k=2)],
        "scored": [d.metadata["source"] for d, _ in scored],
        "banana": [d.id for d in store.similarity_search("a yellow fruit", k=1)],
        "warnings": [str(w.message) for w in caught if "embedding function" in str(w.message)],
    }
    print("RESULT" + json.dumps(out))
    """
)
THROUGH_LLAMA_INDEX = textwrap.dedent(
    """
    import json, sys, warnings
    import chromadb
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.conan import ConanEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore
    collection = chromadb.PersistentClient(sys.argv[1]).get_collection("conan_rag")
    embed_model = ConanEmbedding(model_name=sys.argv[2], device="cpu")
    index = VectorStoreIndex.from_vector_store(
        ChromaVectorStore(chroma_collection=collection), embed_model=embed_model
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index.insert(Document(text="Bananas are yellow and rich in potassium.", id_="banana"))
    retriever = index.as_retriever(similarity_top_k=2)
    recorded = collection.configuration["embedding_function"]
    out = {
        "hits": [n.node.metadata.get("source") for n in retriever.retrieve(sys.argv[3])],
        "banana": retriever.retrieve("a yellow fruit")[0].node.ref_doc_id,
        "recorded": recorded.get_config()["model"],
        "warnings": [str(w.message) for w in caught if "embedding function" in str(w.message)],
    }
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def ingested_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store filled by the installed `conan-rag ingest` command, in its own process."""
    root = tmp_path_factory.mktemp("ingested")
    docs = root / "docs"
    docs.mkdir()
    for name, text in FACTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    command = shutil.which("conan-rag", path=str(Path(sys.executable).parent)) or "conan-rag"
    db = root / "db"
    done = subprocess.run(
        [command, "ingest", str(docs), "--db", str(db), "--model", MINILM, "--no-progress"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return db


@pytest.mark.slow
def test_langchain_chroma_opens_an_ingested_collection_with_conan_embeddings(
    ingested_db: Path, tmp_path: Path
) -> None:
    db = Path(shutil.copytree(ingested_db, tmp_path / "db"))
    out = _run_script(THROUGH_LANGCHAIN, str(db), MINILM, QUESTION)
    assert out["warnings"] == []
    assert out["hits"][0].endswith("everest.txt") and out["scored"] == out["hits"]
    assert out["banana"] == ["banana"]


def test_llama_index_opens_an_ingested_collection_with_conan_embedding(
    ingested_db: Path, tmp_path: Path
) -> None:
    db = Path(shutil.copytree(ingested_db, tmp_path / "db"))
    out = _run_script(THROUGH_LLAMA_INDEX, str(db), MINILM, QUESTION)
    assert out["warnings"] == [] and out["recorded"] == MINILM
    assert out["hits"][0].endswith("everest.txt")
    assert out["banana"] == "banana"
