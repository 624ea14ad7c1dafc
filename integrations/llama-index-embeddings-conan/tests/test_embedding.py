"""ConanEmbedding: hooks not public overrides, events, serialization, index, ingestion.

Numeric checks compare the adapter with the core encoder on the same texts in the same call
shape, on the default dtype (bfloat16 on CPUs with native bf16, float32 elsewhere): one
computation either way, so they agree to 1e-6 whatever the default resolves to. Where a check
needs a reference computed differently, it pins ``dtype="float32"``; bfloat16 is run explicitly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import conan_rag
import numpy as np
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode
from llama_index.core.storage.kvstore import SimpleKVStore

from llama_index.embeddings.conan import ConanEmbedding

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PUBLIC = (
    "get_query_embedding",
    "aget_query_embedding",
    "get_text_embedding",
    "aget_text_embedding",
    "get_text_embedding_batch",
    "aget_text_embedding_batch",
    "get_agg_embedding_from_queries",
    "aget_agg_embedding_from_queries",
)
DOCS = [
    "The Eiffel Tower is in Paris and was completed in 1889.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Great Wall of China is thousands of kilometres long.",
    "Mitochondria are the powerhouse of the cell.",
    "Python was created by Guido van Rossum.",
]


@pytest.fixture(scope="module")
def emb() -> ConanEmbedding:
    return ConanEmbedding(model_name=MINILM, device="cpu")


def test_settings_are_described_fields_with_conan_defaults() -> None:
    fields = ConanEmbedding.model_fields
    assert fields["model_name"].default == "TencentBAC/Conan-embedding-v1"
    assert fields["embed_batch_size"].default >= 1024
    for name in (
        "model_name",
        "device",
        "dtype",
        "normalize",
        "query_prompt",
        "document_prompt",
        "revision",
        "truncate_dim",
        "max_seq_length",
        "token_budget",
        "max_batch_size",
    ):
        assert fields[name].description, f"{name} has no description"
    assert ConanEmbedding.class_name() == "ConanEmbedding"


def test_llama_index_names_are_accepted_and_read_back() -> None:
    emb = ConanEmbedding(
        model=MINILM, device="cpu", query_instruction="q: ", text_instruction="d: ", max_length=64
    )
    assert (emb.model_name, emb.query_prompt, emb.document_prompt) == (MINILM, "q: ", "d: ")
    assert (emb.query_instruction, emb.text_instruction) == ("q: ", "d: ")
    assert emb.max_seq_length == emb.encoder.max_seq_length == 64
    # A saved 0.2 adapter (its fields were query_instruction / text_instruction) still loads.
    old = {"model_name": MINILM, "device": "cpu", "query_instruction": "q: ", "class_name": "x"}
    assert (
        ConanEmbedding.from_dict(old).encoder
        is ConanEmbedding(MINILM, device="cpu", query_prompt="q: ").encoder
    )


def test_public_methods_are_inherited_not_overridden() -> None:
    own = ConanEmbedding.__mro__[: ConanEmbedding.__mro__.index(BaseEmbedding)]
    for name in PUBLIC:
        assert name in BaseEmbedding.__dict__
        assert not any(name in cls.__dict__ for cls in own), f"{name} is overridden"


def test_a_missing_model_raises_the_conan_error() -> None:
    with pytest.raises(conan_rag.ConanModelError):
        ConanEmbedding(model_name="no-such-org/no-such-model", device="cpu")


def test_vectors_match_the_shared_encoder(emb: ConanEmbedding) -> None:
    enc = conan_rag.load_encoder(MINILM, device="cpu")
    assert emb.encoder is enc
    np.testing.assert_allclose(
        emb.get_text_embedding_batch(DOCS), enc.encode(DOCS, kind="document"), atol=1e-6
    )
    np.testing.assert_allclose(
        emb.get_query_embedding("capital"), enc.encode(["capital"], kind="query")[0], atol=1e-6
    )
    assert all(type(x) is float for x in emb.get_text_embedding(DOCS[0]))


def test_instructions_go_to_their_side_only(emb: ConanEmbedding) -> None:
    inst = ConanEmbedding(
        model_name=MINILM, device="cpu", query_instruction="query: ", text_instruction="passage: "
    )
    assert inst.encoder.backend is emb.encoder.backend  # one set of weights
    np.testing.assert_allclose(
        inst.get_query_embedding("plants"), emb.get_query_embedding("query: plants"), atol=1e-6
    )
    np.testing.assert_allclose(
        inst.get_text_embedding("plants"), emb.get_text_embedding("passage: plants"), atol=1e-6
    )
    assert not np.allclose(inst.get_query_embedding("plants"), inst.get_text_embedding("plants"))


async def test_async_hooks_match_sync(emb: ConanEmbedding) -> None:
    np.testing.assert_allclose(
        await emb.aget_text_embedding_batch(DOCS), emb.get_text_embedding_batch(DOCS), atol=1e-6
    )
    np.testing.assert_allclose(
        await emb.aget_text_embedding(DOCS[1]), emb.get_text_embedding(DOCS[1]), atol=1e-6
    )
    np.testing.assert_allclose(
        await emb.aget_query_embedding("cells"), emb.get_query_embedding("cells"), atol=1e-6
    )


def test_callback_manager_sees_every_embedding_call() -> None:
    debug = LlamaDebugHandler()
    emb = ConanEmbedding(
        model_name=MINILM,
        device="cpu",
        embed_batch_size=2,
        callback_manager=CallbackManager([debug]),
    )
    emb.get_query_embedding("a question")
    emb.get_text_embedding_batch(DOCS)  # 5 texts in batches of 2 -> 3 events
    pairs = debug.get_event_pairs(CBEventType.EMBEDDING)
    assert len(pairs) == 4
    chunks = [c for _, end in pairs[1:] for c in (end.payload or {})["chunks"]]
    assert chunks == DOCS


class _Counter(BaseEventHandler):
    counts: Counter[str]

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (EmbeddingStartEvent, EmbeddingEndEvent)):
            self.counts[type(event).__name__] += 1


@pytest.fixture
def instrumentation_counter() -> Iterator[_Counter]:
    root = get_dispatcher()
    handler = _Counter(counts=Counter())
    root.add_event_handler(handler)
    yield handler
    root.event_handlers = [h for h in root.event_handlers if h is not handler]


async def test_instrumentation_events_fire(
    emb: ConanEmbedding, instrumentation_counter: _Counter
) -> None:
    emb.get_query_embedding("q")
    emb.get_text_embedding("t")
    await emb.aget_text_embedding_batch(DOCS)
    assert instrumentation_counter.counts == {"EmbeddingStartEvent": 3, "EmbeddingEndEvent": 3}


def test_embeddings_cache_is_used(emb: ConanEmbedding) -> None:
    cached = ConanEmbedding(model_name=MINILM, device="cpu", embeddings_cache=SimpleKVStore())
    first = cached.get_text_embedding_batch(DOCS[:2])
    assert cached.embeddings_cache is not None
    assert len(cached.embeddings_cache.get_all(collection="embeddings")) == 2
    np.testing.assert_allclose(cached.get_text_embedding_batch(DOCS[:2]), first, atol=0)


def test_to_dict_from_dict_round_trip() -> None:
    emb = ConanEmbedding(
        model_name=MINILM,
        device="cpu",
        dtype="float32",
        query_instruction="query: ",
        embed_batch_size=64,
        normalize=False,
    )
    data = json.loads(json.dumps(emb.to_dict()))
    assert data["class_name"] == "ConanEmbedding"
    back = ConanEmbedding.from_dict(data)
    for name in (
        "model_name",
        "device",
        "dtype",
        "query_instruction",
        "text_instruction",
        "embed_batch_size",
        "normalize",
    ):
        assert getattr(back, name) == getattr(emb, name), name
    assert back.encoder is emb.encoder
    np.testing.assert_allclose(back.get_query_embedding("x"), emb.get_query_embedding("x"), atol=0)
    assert ConanEmbedding.from_json(emb.to_json()).query_instruction == "query: "


@pytest.fixture
def global_embed_model(emb: ConanEmbedding) -> Iterator[ConanEmbedding]:
    previous = Settings._embed_model
    Settings.embed_model = emb
    yield emb
    Settings._embed_model = previous


def test_settings_embed_model_builds_an_index_that_retrieves(
    global_embed_model: ConanEmbedding,
) -> None:
    assert Settings.embed_model is global_embed_model
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    retriever = index.as_retriever(similarity_top_k=1)
    assert [n.text for n in retriever.retrieve("Who created the Python language?")] == [DOCS[4]]
    assert [n.text for n in retriever.retrieve("What produces energy in cells?")] == [DOCS[3]]


def test_ingestion_pipeline_embeds_split_nodes(emb: ConanEmbedding) -> None:
    text = " ".join(DOCS * 3)
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0), emb]
    )
    nodes = pipeline.run(documents=[Document(text=text, metadata={"source": "facts"})])
    assert len(nodes) > 1
    assert all(n.embedding is not None and len(n.embedding) == emb.encoder.dim for n in nodes)
    contents = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    np.testing.assert_allclose(
        np.array([n.embedding for n in nodes], dtype=np.float32),
        emb.encoder.encode(contents, kind="document"),
        atol=1e-6,
    )
