"""Store: clients, cosine collections that record their encoder, the guard, auth from env only."""

# ruff: noqa: F811 - pytest fixtures imported from tests.pipeline_helpers
from __future__ import annotations

import logging

import pytest

from conan_rag.errors import (
    CollectionMismatchError,
    CollectionNotFoundError,
    ConanConfigError,
    StoreError,
)
from conan_rag.rag.store import (
    CONFIG_KEY,
    DIM_KEY,
    FINGERPRINT_KEY,
    MODEL_KEY,
    TOKEN_ENV,
    auth_headers,
    batch_size,
    open_client,
    open_collection,
    recorded_config,
)
from tests.pipeline_helpers import minilm, server_url, store, tiny  # noqa: F401


def _client(store: dict):
    return open_client(db=store.get("db"), url=store.get("url"))


def test_collection_records_encoder_and_uses_cosine(store, tiny) -> None:
    client = _client(store)
    collection = open_collection(client, store["collection"], tiny)
    meta = collection.metadata
    assert meta[MODEL_KEY] == tiny.model_id and meta[DIM_KEY] == tiny.dim
    assert meta[FINGERPRINT_KEY] == tiny.fingerprint
    assert collection.configuration["hnsw"]["space"] == "cosine"
    config = recorded_config(client, store["collection"])
    assert config is not None and config.model == tiny.model_id and config.device == "auto"
    assert CONFIG_KEY in meta
    assert recorded_config(client, "no-such-collection") is None
    assert 1 <= batch_size(client, 10) <= 10 and batch_size(client) == client.get_max_batch_size()


def test_mismatch_raises_before_any_write(store, tiny, minilm) -> None:
    client = _client(store)
    collection = open_collection(client, store["collection"], tiny)
    collection.add(ids=["a"], embeddings=[[0.1] * tiny.dim], documents=["x"])
    with pytest.raises(CollectionMismatchError) as info:
        open_collection(client, store["collection"], minilm)
    assert tiny.model_id in str(info.value) and minilm.model_id in str(info.value)
    assert (info.value.recorded_model, info.value.offered_model) == (tiny.model_id, minilm.model_id)
    assert "--" not in str(info.value)  # library errors name no command-line flags
    assert collection.count() == 1
    foreign = client.get_or_create_collection("foreign-one", embedding_function=None)
    assert foreign.count() == 0
    with pytest.raises(CollectionMismatchError, match="not created by conan-rag"):
        open_collection(client, "foreign-one", tiny)
    with pytest.raises(CollectionNotFoundError, match="Ingest documents into it first") as missing:
        open_collection(client, "missing-one", tiny, create=False)
    assert missing.value.collection == "missing-one" and "foreign-one" in missing.value.existing


@pytest.mark.server
def test_token_only_from_environment(monkeypatch, caplog, server_url) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert auth_headers() == {}
    monkeypatch.setenv(TOKEN_ENV, " tok-123 ")
    assert auth_headers() == {"Authorization": "Bearer tok-123"}
    with pytest.raises(ConanConfigError, match="CONAN_RAG_CHROMA_TOKEN") as info:
        open_client(url="http://user:tok-123@127.0.0.1:9")
    assert "tok-123" not in str(info.value)
    for bad in ("localhost:8000", "ftp://host:1", "http://"):
        with pytest.raises(ConanConfigError, match="http://HOST:PORT"):
            open_client(url=bad)
    with pytest.raises(StoreError, match="chroma run") as unreachable:
        open_client(url="http://127.0.0.1:9")
    assert unreachable.value.location == "http://127.0.0.1:9"
    with caplog.at_level(logging.DEBUG):
        client = open_client(url=server_url)  # the server accepts the bearer header
        client.heartbeat()
    assert "tok-123" not in caplog.text
