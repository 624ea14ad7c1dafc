"""The server's service tokenizes a request once, into the very ids the encoder would feed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conan_rag import load_encoder
from conan_rag.encoder import Encoder
from conan_rag.server.admission import Admission
from conan_rag.server.service import EmbeddingService
from conan_rag.server.slices import embed_in_slices
from conan_rag.testing import build_conan_layout_model
from tests.texts import sts_chinese, sts_english

ODD = [
    "",
    " ",
    "Hello World!",
    "[SEP] inside [CLS] text [MASK]",
    "ÀÉÎÕÜ Straße ﬁ ＡＢＣ１２３",
    "长城有多长？北京是中国的首都。",
    "emoji 🙂🚀 and \u200b zero width",
    "word " * 1000,
    "x" * 50_000,
    ("long one " * 3000) + "end",
]


@pytest.fixture(scope="module")
def encoders(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Encoder]:
    """MiniLM, and a Conan-layout model with prompts and a 64-token limit."""
    root = tmp_path_factory.mktemp("prompted")
    prompted = build_conan_layout_model(
        root / "m", max_seq_length=64, prompts={"query": "Represent this question: "}
    )
    return [
        load_encoder(str(minilm_path), device="cpu", dtype="float32"),
        load_encoder(str(prompted), device="cpu", dtype="float32"),
    ]


def test_rows_are_the_encoders_own_ids(encoders: list[Encoder]) -> None:
    texts = ODD + sts_english(40) + sts_chinese(40)
    for encoder in encoders:
        service = EmbeddingService(encoder)
        for kind in ("query", "document"):
            rows = service.rows(texts, kind)
            assert rows.ids == encoder.tokenize(texts, kind=kind), (encoder.model_id, kind)
            lengths = service.count(texts, kind)
            assert rows.over == [n > encoder.max_seq_length for n in lengths]


def test_a_sliced_request_is_embedded_from_its_rows_without_tokenizing_again(
    encoders: list[Encoder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """float32: the served vectors equal ``encode``'s; the encoder's tokenizer is never run."""
    encoder = encoders[0]
    service = EmbeddingService(encoder)
    texts = sts_english(120) + ODD
    want = encoder.encode(texts)
    calls: list[int] = []
    tokenize = encoder.backend.tokenize

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return tokenize(*args, **kwargs)

    monkeypatch.setattr(encoder.backend, "tokenize", counted)

    async def serve() -> np.ndarray:
        rows = await service.arows(texts, "document")
        admission = Admission(4096)  # slices of 512 tokens: many parts
        return await embed_in_slices(
            service, admission, rows.ids, "document", dimensions=None, normalize=True
        )

    got = asyncio.run(serve())
    assert calls == []
    assert got.shape == want.shape and float((got * want).sum(axis=1).min()) >= 0.99999
