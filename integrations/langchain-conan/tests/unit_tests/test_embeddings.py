"""ConanEmbeddings behaviour: configuration, prompts, plain-float output, non-blocking async.

Numeric checks compare the adapter with the core encoder on the same texts in the same call
shape, on the default dtype (bfloat16 on CPUs with native bf16, float32 elsewhere): one
computation either way, so they agree to 1e-6 whatever the default resolves to. Where a check
needs a reference computed differently, it pins ``dtype="float32"``; bfloat16 is run explicitly.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import conan_rag
import numpy as np
import pytest
from conan_rag.testing import LoopProbe
from pydantic import ValidationError

from langchain_conan import ConanEmbeddings

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def emb() -> ConanEmbeddings:
    return ConanEmbeddings(model=MINILM, device="cpu")


def test_defaults_name_conan_and_auto_settings() -> None:
    fields = ConanEmbeddings.model_fields
    assert fields["model"].default == "TencentBAC/Conan-embedding-v1"
    assert (fields["device"].default, fields["dtype"].default) == ("auto", "auto")
    assert fields["normalize"].default is True
    assert fields["query_prompt"].default is None and fields["document_prompt"].default is None
    assert fields["show_progress"].default is False


def test_model_name_alias_and_field_name_give_the_same_shared_encoder() -> None:
    a = ConanEmbeddings(model=MINILM, device="cpu")
    b = ConanEmbeddings(model_name=MINILM, device="cpu")
    assert a.model == b.model == MINILM
    assert a.encoder is b.encoder is conan_rag.load_encoder(MINILM, device="cpu")


def test_a_misspelled_parameter_fails_loudly() -> None:
    with pytest.raises(ValidationError, match="modle"):
        ConanEmbeddings(modle=MINILM, device="cpu")


def test_a_missing_model_names_the_fix() -> None:
    with pytest.raises(conan_rag.ConanModelError):
        ConanEmbeddings(model="no-such-org/no-such-model", device="cpu")


def test_outputs_are_plain_float_lists_matching_the_encoder(emb: ConanEmbeddings) -> None:
    docs = ["Paris is the capital of France.", "Bananas are yellow.", ""]
    got = emb.embed_documents(docs)
    assert type(got) is list and all(type(v) is list for v in got)
    assert all(type(x) is float for v in got for x in v)
    want = conan_rag.load_encoder(MINILM, device="cpu").encode(docs, kind="document")
    np.testing.assert_allclose(np.array(got, dtype=np.float32), want, rtol=0, atol=1e-6)
    query = emb.embed_query("capital of France")
    assert len(query) == 384
    np.testing.assert_allclose(np.linalg.norm(query), 1.0, atol=1e-5)


def test_query_prompt_applies_to_queries_only() -> None:
    plain = ConanEmbeddings(model=MINILM, device="cpu")
    prompted = ConanEmbeddings(model=MINILM, device="cpu", query_prompt="query: ")
    text = "how do plants make sugar"
    assert prompted.encoder is not plain.encoder
    assert prompted.encoder.backend is plain.encoder.backend  # one set of weights
    assert not np.allclose(prompted.embed_query(text), plain.embed_query(text), atol=1e-4)
    np.testing.assert_allclose(
        prompted.embed_query(text), plain.embed_query("query: " + text), atol=1e-6
    )
    np.testing.assert_allclose(
        prompted.embed_documents([text])[0], plain.embed_documents([text])[0], atol=1e-6
    )


def test_document_prompt_applies_to_documents_only() -> None:
    plain = ConanEmbeddings(model=MINILM, device="cpu")
    prompted = ConanEmbeddings(model=MINILM, device="cpu", document_prompt="passage: ")
    text = "Photosynthesis turns light into sugar."
    np.testing.assert_allclose(
        prompted.embed_documents([text])[0],
        plain.embed_documents(["passage: " + text])[0],
        atol=1e-6,
    )
    np.testing.assert_allclose(prompted.embed_query(text), plain.embed_query(text), atol=1e-6)


def test_normalize_false_keeps_raw_norms() -> None:
    raw = ConanEmbeddings(model=MINILM, device="cpu", normalize=False)
    unit = ConanEmbeddings(model=MINILM, device="cpu")
    text = ["The quick brown fox jumps over the lazy dog."]
    v = np.array(raw.embed_documents(text)[0])
    u = np.array(unit.embed_documents(text)[0])
    np.testing.assert_allclose(v / np.linalg.norm(v), u, atol=1e-5)


async def test_async_matches_sync(emb: ConanEmbeddings) -> None:
    docs = ["Paris is the capital of France.", "Bananas are yellow."]
    np.testing.assert_allclose(
        await emb.aembed_documents(docs), emb.embed_documents(docs), atol=1e-6
    )
    np.testing.assert_allclose(
        await emb.aembed_query("capital of France"), emb.embed_query("capital of France"), atol=1e-6
    )
    assert type(await emb.aembed_query("x")) is list


async def test_aembed_documents_does_not_block_the_event_loop(
    conan_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Synchronised on state, not on a clock (conan_rag.testing.LoopProbe): after each model
    # batch, the thread running it waits until the event loop has ticked once more.
    emb = ConanEmbeddings(model=str(conan_tiny), device="cpu", token_budget=1024)
    rng = random.Random(0)
    texts = ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(32)) for _ in range(2000)]
    backend = emb.encoder.backend
    probe = LoopProbe()
    monkeypatch.setattr(backend, "embed", probe.wrap(backend.embed))
    async with probe:
        start, cpu_start = probe.mark(), time.process_time()
        vectors = await emb.aembed_documents(texts)
        end, cpu = probe.mark(), time.process_time() - cpu_start
    assert len(vectors) == 2000 and len(vectors[0]) == emb.encoder.dim
    assert probe.failures(min_batches=10) == []
    # Nor does work on the loop itself (tokenizing, list conversion) hold it for a large share
    # of the job: the loop thread's own CPU seconds between two ticks, which a busy machine
    # that delays the ticks does not inflate.
    block = probe.longest_block(start, end)
    assert block < cpu / 10, f"{block:.3f} CPU s on the loop at once, of {cpu:.2f} CPU s"


def test_bfloat16_runs_and_stays_close_to_float32() -> None:
    # Explicit on every CPU (native or emulated bf16): the dtype reaches the shared encoder.
    docs = ["Paris is the capital of France.", "细胞分裂。", "A longer sentence about genes."]
    bf16 = ConanEmbeddings(model=MINILM, device="cpu", dtype="bfloat16")
    fp32 = ConanEmbeddings(model=MINILM, device="cpu", dtype="float32")
    assert (bf16.encoder.dtype, fp32.encoder.dtype) == ("bfloat16", "float32")
    assert bf16.encoder.backend is not fp32.encoder.backend
    cos = (np.array(bf16.embed_documents(docs)) * np.array(fp32.embed_documents(docs))).sum(1)
    assert cos.min() >= 0.999 and cos.max() < 1.0 - 1e-7  # close, and really computed in bf16
