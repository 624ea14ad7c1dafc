"""ConanEmbeddingFunction: Chroma protocol, config as data, and reopening in another process.

Numeric checks compare the adapter with the core encoder on the same texts in the same call
shape, on the default dtype (bfloat16 on CPUs with native bf16, float32 elsewhere): one
computation either way, so they agree to 1e-6 whatever the default resolves to. Where a check
needs a reference computed differently, it pins ``dtype="float32"``; bfloat16 is run explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient
from chromadb.utils.embedding_functions import known_embedding_functions

import conan_rag
from conan_rag.chroma import ConanEmbeddingFunction

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FACTS = [
    "The Eiffel Tower is in Paris and was completed in 1889.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Mitochondria are the powerhouse of the cell.",
    "Python was created by Guido van Rossum.",
]
# Texts in the tiny Conan-layout vocab (ASCII and its first 3,000 CJK characters).
# Lengths differ so no two vectors tie, whatever the tokenizer makes of the characters.
ZH = ["他们去参加大会。", "八个人出去了", "中国人口众多。中国", "你们好吗？"]


@pytest.fixture(scope="module")
def ef() -> ConanEmbeddingFunction:
    return ConanEmbeddingFunction(MINILM, device="cpu", query_prompt="query: ")


def test_registered_with_chroma_under_its_name() -> None:
    assert ConanEmbeddingFunction.name() == "conan-rag"
    assert known_embedding_functions["conan-rag"] is ConanEmbeddingFunction


def test_documents_and_queries_use_their_own_prompts(ef: ConanEmbeddingFunction) -> None:
    enc = conan_rag.load_encoder(MINILM, device="cpu", query_prompt="query: ")
    assert ef.encoder is enc
    docs = ef(FACTS)
    assert isinstance(docs, list) and len(docs) == len(FACTS)
    assert all(
        isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (384,) for v in docs
    )
    np.testing.assert_allclose(np.stack(docs), enc.encode(FACTS, kind="document"), atol=0)
    queries = ef.embed_query(["capital of France"])
    np.testing.assert_allclose(queries[0], enc.encode(["query: capital of France"])[0], atol=1e-6)
    assert not np.allclose(queries[0], ef(["capital of France"])[0], atol=1e-4)


def test_spaces(ef: ConanEmbeddingFunction) -> None:
    assert ef.default_space() == "cosine"
    assert set(ef.supported_spaces()) == {"cosine", "ip", "l2"}
    assert not ef.is_legacy()


def test_config_is_primitives_and_rebuilds_the_same_shared_encoder(
    ef: ConanEmbeddingFunction,
) -> None:
    config = ef.get_config()
    assert json.loads(json.dumps(config)) == config
    # What changes the vectors, and nothing the opening machine should choose (device, dtype,
    # batch sizes).
    assert config == {
        "model": MINILM,
        "revision": None,
        "query_prompt": "query: ",
        "document_prompt": None,
        "truncate_dim": None,
        "max_seq_length": None,
        "normalize": True,
        "fingerprint": ef.encoder.fingerprint,
    }
    rebuilt = ConanEmbeddingFunction.build_from_config(config)
    assert isinstance(rebuilt, ConanEmbeddingFunction)
    assert rebuilt.encoder is ef.encoder
    assert ConanEmbeddingFunction.from_encoder(ef.encoder).encoder is ef.encoder


def test_a_local_model_is_stored_as_an_absolute_path(
    conan_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(conan_tiny.parent)
    local = ConanEmbeddingFunction(conan_tiny.name, device="cpu")
    assert local.get_config()["model"] == str(conan_tiny.resolve())


def test_validate_config_rejects_unknown_keys_naming_the_valid_ones(
    ef: ConanEmbeddingFunction,
) -> None:
    bad = {**ef.get_config(), "normalise": True}
    with pytest.raises(conan_rag.ConanConfigError, match=r"\['normalise'\].*valid settings"):
        ConanEmbeddingFunction.validate_config(bad)
    with pytest.raises(conan_rag.ConanConfigError, match="normalise"):
        ConanEmbeddingFunction.build_from_config(bad)


def test_validate_config_rejects_bad_values(ef: ConanEmbeddingFunction) -> None:
    with pytest.raises(conan_rag.ConanConfigError, match="truncate_dim"):
        ConanEmbeddingFunction.validate_config({**ef.get_config(), "truncate_dim": 0})
    with pytest.raises(conan_rag.ConanConfigError, match="'model' is a list"):
        ConanEmbeddingFunction.validate_config({**ef.get_config(), "model": ["a"]})
    with pytest.raises(conan_rag.ConanConfigError, match="must be a dict"):
        ConanEmbeddingFunction.validate_config([("model", MINILM)])  # type: ignore[arg-type]
    ConanEmbeddingFunction.validate_config(ef.get_config())


def test_config_update_may_change_device_but_not_the_vectors(ef: ConanEmbeddingFunction) -> None:
    old = ef.get_config()
    ef.validate_config_update(old, {**old, "device": "auto", "max_batch_size": 64})
    with pytest.raises(conan_rag.ConanConfigError, match=r"query_prompt='query: '.*new collection"):
        ef.validate_config_update(old, {**old, "query_prompt": None})
    with pytest.raises(conan_rag.ConanConfigError, match="model"):
        ef.validate_config_update(old, {**old, "model": "TencentBAC/Conan-embedding-v1"})
    with pytest.raises(conan_rag.ConanConfigError, match="normalize=True"):
        ef.validate_config_update(old, {**old, "normalize": False})
    with pytest.raises(conan_rag.ConanConfigError, match="fingerprint"):  # other model files
        ef.validate_config_update(old, {**old, "fingerprint": "0123456789abcdef"})


def test_query_texts_find_the_relevant_document(ef: ConanEmbeddingFunction) -> None:
    client = chromadb.EphemeralClient()
    col = client.create_collection("facts_query_test", embedding_function=ef)
    assert col.configuration["hnsw"]["space"] == "cosine"
    col.add(ids=[str(i) for i in range(len(FACTS))], documents=FACTS)
    got = col.query(query_texts=["Who made Python?", "What powers a cell?"], n_results=1)
    assert got["ids"] == [["3"], ["2"]]
    client.delete_collection("facts_query_test")


REOPEN = textwrap.dedent(
    """
    import json, sys
    import chromadb
    client = chromadb.PersistentClient(path=sys.argv[1])
    out = {}
    try:  # Without the class registered, Chroma cannot rebuild the function.
        client.get_collection("zh_docs").query(query_texts=[sys.argv[2]], n_results=2)
    except Exception as exc:
        out["unregistered"] = str(exc)
    import conan_rag.chroma
    col = client.get_collection("zh_docs")
    ef = col.configuration["embedding_function"]
    res = col.query(query_texts=[sys.argv[2]], n_results=2, include=["distances"])
    col.add(ids=["new"], documents=[sys.argv[3]])
    added = col.get(ids=["new"], include=["embeddings"])["embeddings"][0]
    out.update(
        ef_type=type(ef).__name__, config=ef.get_config(), space=col.configuration["hnsw"]["space"],
        ids=res["ids"], distances=res["distances"],
        query_vec=ef.embed_query([sys.argv[2]])[0].tolist(), added=added.tolist(),
    )
    print("RESULT" + json.dumps(out))
    """
)


def test_collection_reopens_in_another_process_with_the_function_rebuilt(
    tmp_path: Path, conan_tiny: Path
) -> None:
    # float32 pinned: the vectors of two processes are compared to 1e-6.
    ef = ConanEmbeddingFunction(
        str(conan_tiny), device="cpu", dtype="float32", query_prompt="回复："
    )
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    col = client.create_collection("zh_docs", embedding_function=ef)
    col.add(ids=[str(i) for i in range(len(ZH))], documents=ZH)
    want = col.query(query_texts=["他们去北京。"], n_results=2, include=["distances"])
    del col, client
    SharedSystemClient.clear_system_cache()  # release the database before the other process

    # The collection records no dtype (the opening machine picks one): CONAN_RAG_DTYPE pins it.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CONAN_RAG_DTYPE": "float32",
    }
    proc = subprocess.run(
        [sys.executable, "-c", REOPEN, str(tmp_path / "db"), "他们去北京。", "天下大乱。"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    out = json.loads(line.removeprefix("RESULT"))
    assert "conan-rag" in out["unregistered"]
    assert out["ef_type"] == "ConanEmbeddingFunction"
    assert out["config"] == ef.get_config()
    assert out["space"] == "cosine"
    assert out["ids"] == want["ids"]
    np.testing.assert_allclose(out["distances"], want["distances"], atol=1e-5)
    np.testing.assert_allclose(out["query_vec"], ef.embed_query(["他们去北京。"])[0], atol=1e-6)
    # Documents added there are embedded exactly as here.
    np.testing.assert_allclose(out["added"], ef(["天下大乱。"])[0], atol=1e-6)
