"""The adapters, the Chroma function, the pipeline and the CLI on a real `conan-rag serve` process.

The server runs all-MiniLM-L6-v2 on the CPU in float32 (pinned, on every CPU), so its vectors are
compared with the in-process float32 encoder: equal up to batch-composition rounding (1e-5).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from langchain_conan import ConanEmbeddings
from llama_index.embeddings.conan import ConanEmbedding

import conan_rag
from conan_rag.chroma import ConanEmbeddingFunction
from conan_rag.cli import main
from conan_rag.errors import ServerError
from conan_rag.remote import RemoteEncoder, remote_encoder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
KEY = "test-key-123"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Cells have mitochondria."]
QUERY = "capital of France"
START_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real server process; its URL."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CONAN_RAG_API_KEY", None)
    command = [sys.executable, "-m", "conan_rag.cli", "serve", "--model", MINILM, "--device"]
    command += ["cpu", "--dtype", "float32", "--port", str(port), "--api-key", KEY]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_S
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"the server exited ({proc.returncode}): {out[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start in {START_S} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def local() -> conan_rag.Encoder:
    return conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")


def test_remote_encoder_gives_the_local_vectors(server: str, local: conan_rag.Encoder) -> None:
    enc = remote_encoder(server, api_key=KEY)
    assert (enc.model_id, enc.dim, enc.max_seq_length) == (MINILM, 384, local.max_seq_length)
    assert enc.fingerprint == local.fingerprint  # device and dtype are not part of it
    assert enc.prompts == local.prompts
    for kind in ("query", "document"):
        want = local.encode(DOCS, kind=kind)
        np.testing.assert_allclose(enc.encode(DOCS, kind=kind), want, atol=1e-5)
    raw = enc.encode(DOCS, normalize=False)
    np.testing.assert_allclose(raw, local.encode(DOCS, normalize=False), atol=1e-5)
    got = asyncio.run(enc.aencode(DOCS * 200, kind="query"))  # several requests, concurrently
    np.testing.assert_allclose(got, local.encode(DOCS * 200, kind="query"), atol=1e-5)
    assert enc.encode([]).shape == (0, 384)
    assert remote_encoder(server, api_key=KEY) is enc  # shared per process
    assert pickle.loads(pickle.dumps(enc)) is enc


def test_truncate_dim_on_the_server_matches_the_local_one(
    server: str, local: conan_rag.Encoder
) -> None:
    enc = remote_encoder(server, api_key=KEY, truncate_dim=64)
    small = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32", truncate_dim=64)
    np.testing.assert_allclose(enc.encode(DOCS), small.encode(DOCS), atol=1e-5)
    assert enc.fingerprint == small.fingerprint != local.fingerprint


def test_the_tokenizer_comes_from_the_server(server: str, local: conan_rag.Encoder) -> None:
    remote = remote_encoder(server, api_key=KEY).tokenizer
    text = "Tenzing Norgay and Edmund Hillary climbed Mount Everest in 1953."
    assert remote(text)["input_ids"] == local.tokenizer(text)["input_ids"]


@pytest.mark.parametrize("kind", ["langchain", "llamaindex", "chroma"])
def test_adapters_in_endpoint_mode_keep_queries_and_documents_apart(
    server: str, local: conan_rag.Encoder, kind: str
) -> None:
    if kind == "langchain":
        emb = ConanEmbeddings(endpoint=server, api_key=KEY)
        docs, query = emb.embed_documents(DOCS), emb.embed_query(QUERY)
        adocs = asyncio.run(emb.aembed_documents(DOCS))
    elif kind == "llamaindex":
        li = ConanEmbedding(endpoint=server, api_key=KEY)
        docs, query = li.get_text_embedding_batch(DOCS), li.get_query_embedding(QUERY)
        adocs = asyncio.run(li.aget_text_embedding_batch(DOCS))
        assert "api_key" not in li.to_dict()  # the key is never saved with the index
    else:
        ef = ConanEmbeddingFunction(endpoint=server, api_key=KEY)
        docs, query, adocs = ef(DOCS), ef.embed_query([QUERY])[0], ef(DOCS)
        assert "endpoint" not in ef.get_config() and ef.get_config()["model"] == MINILM
    np.testing.assert_allclose(np.array(docs), local.encode(DOCS), atol=1e-5)
    np.testing.assert_allclose(np.array(adocs), local.encode(DOCS), atol=1e-5)
    np.testing.assert_allclose(np.array(query), local.encode([QUERY], kind="query")[0], atol=1e-5)


def test_endpoint_settings_the_server_decides_are_refused(server: str) -> None:
    with pytest.raises(conan_rag.ConanConfigError, match=r"\['dtype'\] are decided by the server"):
        ConanEmbeddings(endpoint=server, api_key=KEY, dtype="bfloat16")
    with pytest.raises(conan_rag.ConanConfigError, match="runs 'sentence-transformers"):
        ConanEmbedding("some/other-model", endpoint=server, api_key=KEY)


def test_a_wrong_key_and_a_missing_server_name_the_fix(server: str) -> None:
    with pytest.raises(conan_rag.ConanConfigError, match="refused the API key.*CONAN_RAG_API_KEY"):
        RemoteEncoder(server, api_key="wrong")
    with pytest.raises(ServerError, match="No conan-rag server answers.*conan-rag serve"):
        RemoteEncoder(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(conan_rag.ConanConfigError, match="not of the form"):
        RemoteEncoder("localhost:8080")


def test_the_cli_ingests_on_the_server_and_a_local_model_reads_the_collection(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conan_tiny: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {"paris.txt": DOCS[0], "cells.txt": DOCS[2]}.items():
        (docs / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("CONAN_RAG_API_KEY", KEY)
    db = str(tmp_path / "db")
    assert main(["ingest", str(docs), "--db", db, "--endpoint", server, "--no-progress"]) == 0
    # The collection records the server's fingerprint: the same model here reads it.
    common = ["--db", db, "--json", "--device", "cpu", "--dtype", "float32"]
    assert main(["query", "Which city is the capital of France?", "--k", "1", *common]) == 0
    # ... and a server running another model than the collection's is refused.
    tiny_db = str(tmp_path / "tiny_db")
    assert main(["ingest", str(docs), "--db", tiny_db, "--model", str(conan_tiny)]) == 0
    assert main(["ingest", str(docs), "--db", tiny_db, "--endpoint", server]) == 2


def test_a_recorded_function_embeds_on_the_server_when_asked(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    ef = ConanEmbeddingFunction(MINILM, device="cpu", dtype="float32")
    collection = client.create_collection("facts", embedding_function=ef)
    collection.add(ids=["p", "b", "c"], documents=DOCS)
    monkeypatch.setenv("CONAN_RAG_ENDPOINT", server)
    monkeypatch.setenv("CONAN_RAG_API_KEY", KEY)
    rebuilt = ConanEmbeddingFunction.build_from_config(ef.get_config())
    assert isinstance(rebuilt.encoder, RemoteEncoder)
    col = client.get_collection("facts", embedding_function=rebuilt)
    assert col.query(query_texts=[QUERY], n_results=1)["ids"] == [["p"]]


def test_readme_server_clients(
    server: str, local: conan_rag.Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's client block, run against this server (its URL in place of port 8080)."""
    from tests.test_readme import run, section_blocks

    (block,) = section_blocks("Server: one encoder for every process")
    monkeypatch.setenv("CONAN_RAG_API_KEY", KEY)
    ns = run(block.replace("http://127.0.0.1:8080", server))
    np.testing.assert_allclose(
        ns["query"], local.encode(["Who first climbed Everest?"], kind="query")[0], atol=1e-5
    )
    text = "Tenzing Norgay and Edmund Hillary, 1953."
    np.testing.assert_allclose(ns["document"], local.encode([text])[0], atol=1e-5)
