"""The adapters behave like their ecosystems' objects: copied, pickled, changed, spelled their way.

Numeric checks pin ``dtype="float32"`` (on every CPU, whether or not it has native bf16), so a
copy, a pickle or another process must give the same vectors to 1e-6.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest
from langchain_conan import ConanEmbeddings
from llama_index.embeddings.conan import ConanEmbedding
from pydantic import ValidationError

import conan_rag
from conan_rag.adapter_kit import VOCABULARY
from conan_rag.chroma import ConanEmbeddingFunction
from conan_rag.model.files import resolve_model
from conan_rag.registry import loaded_backends

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Cells have mitochondria."]
QUERY = "capital of France"
SETTINGS: dict[str, Any] = {"device": "cpu", "dtype": "float32", "query_prompt": "query: "}
KINDS = ("langchain", "llamaindex", "chroma")


def make(kind: str, *args: Any, **settings: Any) -> Any:
    """One adapter of ``kind`` with the model given positionally."""
    cls = {"langchain": ConanEmbeddings, "llamaindex": ConanEmbedding}.get(kind)
    return (cls or ConanEmbeddingFunction)(*args, **settings)


def vectors(adapter: Any) -> tuple[np.ndarray, np.ndarray]:
    """(document vectors, query vector) through the adapter's own API."""
    if isinstance(adapter, ConanEmbeddings):
        return np.array(adapter.embed_documents(DOCS)), np.array(adapter.embed_query(QUERY))
    if isinstance(adapter, ConanEmbedding):
        docs = adapter.get_text_embedding_batch(DOCS)
        return np.array(docs), np.array(adapter.get_query_embedding(QUERY))
    return np.stack(adapter(DOCS)), adapter.embed_query([QUERY])[0]


def in_child(blob: bytes) -> dict[str, Any]:
    """Run in a spawned worker: unpickle the adapters and embed with them there."""
    adapters = pickle.loads(blob)
    return {
        "vectors": [tuple(v.tolist() for v in vectors(a)) for a in adapters],
        "one_encoder": len({id(a.encoder) for a in adapters}) == 1,
        "backends": loaded_backends(),
        "prompts": [a.encoder.prompts for a in adapters],
    }


@pytest.fixture(scope="module")
def adapters() -> list[Any]:
    return [make(kind, MINILM, **SETTINGS) for kind in KINDS]


# model_copy is pydantic's: Chroma's embedding function, a plain class, has the other three.
COPIES = [
    (index, how)
    for index, kind in enumerate(KINDS)
    for how in ("pickle", "copy", "deepcopy", "model_copy", "model_copy_deep")
    if kind != "chroma" or not how.startswith("model_copy")
]


@pytest.mark.parametrize(("index", "how"), COPIES, ids=[f"{KINDS[i]}-{h}" for i, h in COPIES])
def test_copies_keep_settings_encoder_and_vectors(
    adapters: list[Any], index: int, how: str
) -> None:
    original = adapters[index]
    clone = {
        "pickle": lambda a: pickle.loads(pickle.dumps(a)),
        "copy": copy.copy,
        "deepcopy": copy.deepcopy,
        "model_copy": lambda a: a.model_copy(),
        "model_copy_deep": lambda a: a.model_copy(deep=True),
    }[how](original)
    assert clone is not original
    assert clone.encoder is original.encoder  # re-attached to this process's shared encoder
    for want, got in zip(vectors(original), vectors(clone), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=0)


def test_pickles_load_in_another_process_onto_its_shared_encoder(adapters: list[Any]) -> None:
    blob = pickle.dumps(adapters)
    assert len(blob) < 20_000  # settings travel, not weights
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        out = pool.submit(in_child, blob).result(timeout=300)
    assert out["one_encoder"] and out["backends"] == 1  # one weight load serves all three there
    assert out["prompts"] == [{"query": "query: ", "document": ""}] * 3
    for adapter, (docs, query) in zip(adapters, out["vectors"], strict=True):
        want_docs, want_query = vectors(adapter)
        np.testing.assert_allclose(docs, want_docs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(query, want_query, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS[:2])
def test_assigning_a_setting_changes_the_vectors(kind: str) -> None:
    emb = make(kind, MINILM, device="cpu", dtype="float32")
    plain = conan_rag.load_encoder(MINILM, device="cpu", dtype="float32")
    assert emb.encoder is plain
    emb.query_prompt = "query: "
    _, query = vectors(emb)
    np.testing.assert_allclose(query, plain.encode(["query: " + QUERY])[0], atol=1e-6)
    emb.truncate_dim = 64
    docs, query = vectors(emb)
    assert docs.shape == (len(DOCS), 64) and query.shape == (64,)
    assert emb.encoder.config.query_prompt == "query: "  # both changes hold
    assert emb.encoder.backend is plain.backend  # a view of the same weights, not a reload


@pytest.mark.parametrize("kind", KINDS[:2])
def test_model_copy_with_update_is_a_new_adapter_bound_to_the_update(kind: str) -> None:
    emb = make(kind, MINILM, device="cpu", dtype="float32")
    short = emb.model_copy(update={"truncate_dim": 32, "normalize": False})
    assert (short.truncate_dim, short.normalize) == (32, False)
    assert (emb.truncate_dim, emb.normalize) == (None, True)  # the original is untouched
    docs, _ = vectors(short)
    # truncate_dim keeps the first 32 dimensions; normalize=False leaves them as they are
    np.testing.assert_allclose(docs, emb.encoder.encode(DOCS, normalize=False)[:, :32], atol=1e-6)
    assert not np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-3)
    with pytest.raises(ValidationError):
        emb.model_copy(update={"max_batch_size": "many"})


@pytest.mark.parametrize("kind", KINDS[:2])
def test_a_refused_setting_leaves_the_adapter_as_it_was(kind: str) -> None:
    emb = make(kind, MINILM, device="cpu", dtype="float32")
    encoder = emb.encoder
    with pytest.raises(conan_rag.ConanConfigError, match="Unknown device 'tpu'"):
        emb.device = "tpu"
    with pytest.raises(conan_rag.ConanConfigError, match="truncate_dim 4096 exceeds"):
        emb.truncate_dim = 4096
    with pytest.raises(ValidationError):
        emb.max_batch_size = "many"
    assert (emb.device, emb.truncate_dim, emb.max_batch_size) == ("cpu", None, 512)
    assert emb.encoder is encoder


def test_llama_index_instruction_names_rebind_too() -> None:
    emb = ConanEmbedding(MINILM, device="cpu", dtype="float32")
    emb.query_instruction = "query: "
    emb.text_instruction = "passage: "
    assert emb.encoder.prompts == {"query": "query: ", "document": "passage: "}
    assert (emb.query_prompt, emb.document_prompt) == ("query: ", "passage: ")


def test_every_adapter_takes_every_option_and_they_agree() -> None:
    options = {
        "revision": None,
        "device": "cpu",
        "dtype": "float32",
        "query_prompt": "q: ",
        "document_prompt": "d: ",
        "truncate_dim": 128,
        "max_seq_length": 64,
        "token_budget": 1024,
        "max_batch_size": 16,
        "normalize": False,
    }
    # every local option (endpoint and api_key, a server's, have tests of their own)
    assert set(options) | {"model", "endpoint", "api_key"} == set(VOCABULARY)
    made = [make(kind, model=MINILM, **options) for kind in KINDS]
    assert len({id(a.encoder) for a in made}) == 1
    config = made[0].encoder.config
    assert (config.truncate_dim, config.max_seq_length, config.token_budget) == (128, 64, 1024)
    assert made[0].encoder.prompts == {"query": "q: ", "document": "d: "}
    first_docs, first_query = vectors(made[0])
    assert first_docs.shape == (3, 128)
    assert not np.allclose(np.linalg.norm(first_docs, axis=1), 1.0, atol=1e-3)  # normalize=False
    for adapter in made[1:]:
        docs, query = vectors(adapter)
        np.testing.assert_allclose(docs, first_docs, atol=1e-6)
        np.testing.assert_allclose(query, first_query, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_model_positionally_or_by_either_name(kind: str) -> None:
    by_position = make(kind, MINILM, device="cpu")
    by_name = make(kind, model_name=MINILM, device="cpu")
    by_model = make(kind, model=MINILM, device="cpu")
    assert by_position.encoder is by_name.encoder is by_model.encoder
    with pytest.raises(conan_rag.ConanConfigError, match="given twice|pass it once"):
        make(kind, MINILM, model="other/model", device="cpu")


@pytest.mark.parametrize("kind", KINDS)
def test_ecosystem_names_that_disagree_are_refused(kind: str) -> None:
    with pytest.raises(conan_rag.ConanConfigError, match="normalize_embeddings=False.*once"):
        make(kind, MINILM, device="cpu", normalize=True, normalize_embeddings=False)


def test_hugging_face_embeddings_arguments_give_sentence_transformers_vectors() -> None:
    from sentence_transformers import SentenceTransformer

    model_kwargs = {
        "device": "cpu",
        "model_kwargs": {"torch_dtype": "float32"},
        "prompts": {"query": "query: ", "document": "passage: "},
    }
    encode_kwargs = {"normalize_embeddings": False, "batch_size": 8}
    emb = ConanEmbeddings(
        model_name=MINILM,
        model_kwargs=model_kwargs,
        encode_kwargs=encode_kwargs,
        query_encode_kwargs={"normalize_embeddings": False},
    )
    assert (emb.device, emb.dtype, emb.max_batch_size, emb.normalize) == (
        "cpu",
        "float32",
        8,
        False,
    )
    assert (emb.query_prompt, emb.document_prompt) == ("query: ", "passage: ")
    st = SentenceTransformer(str(resolve_model(MINILM)), **model_kwargs)
    want_docs = st.encode(DOCS, prompt_name="document", **encode_kwargs)
    want_query = st.encode([QUERY], prompt_name="query", normalize_embeddings=False)[0]
    docs, query = vectors(emb)
    np.testing.assert_allclose(docs, want_docs, atol=1e-5)
    np.testing.assert_allclose(query, want_query, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_kwargs": {"trust_remote_code": True}}, "never runs code from a model folder"),
        ({"model_kwargs": {"cache_folder": "/x"}}, "pass the model folder itself"),
        ({"encode_kwargs": {"prompt_name": "query"}}, "query_prompt / document_prompt"),
        ({"encode_kwargs": {"precision": "int8"}}, "quantize them in your vector store"),
        ({"model_kwargs": {"model_kwargs": {"attn_implementation": "sdpa"}}}, "only the dtype"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_kwargs_without_an_equivalent_are_refused_naming_it(
    kind: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(conan_rag.ConanConfigError, match=message) as info:
        make(kind, MINILM, device="cpu", **kwargs)
    assert "The options are: model, revision" in str(info.value)


IMPORTS = """
import sys, time
start = time.perf_counter()
import {module}
took = time.perf_counter() - start
heavy = [m for m in ("torch", "transformers", "chromadb", "conan_rag.rag") if m in sys.modules]
print(heavy, round(took, 3))
"""


@pytest.mark.parametrize("module", ["langchain_conan", "llama_index.embeddings.conan", "conan_rag"])
def test_importing_an_adapter_loads_neither_torch_nor_the_pipeline(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS.format(module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.startswith("[]"), proc.stdout  # none of the heavy modules


def test_llama_index_pickles_without_dropping_attributes(
    adapters: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        clone = pickle.loads(pickle.dumps(adapters[1]))
    assert not [r for r in caplog.records if "unpickleable" in r.getMessage().lower()]
    assert clone.encoder is adapters[1].encoder and clone.query_prompt == "query: "
