"""The runners' tokenization gives exactly the ids ``tokenizer(...)`` gives.

The runners read the fast tokenizer's Rust ``encode_batch`` directly (configured as
``tokenizer(...)`` configures it); these checks compare with transformers' own call on the
real all-MiniLM-L6-v2 tokenizer, Conan's layout (BERT Chinese vocabulary) and a BERT and an
XLM-R cross-encoder, for single texts and pairs, truncated at several limits. Ids only: no
dtype is involved.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conan_rag.model.files import resolve_model
from conan_rag.model.spec import read_model_spec
from conan_rag.reranking.runner import CrossEncoderRunner
from conan_rag.reranking.spec import read_cross_encoder_spec
from conan_rag.runtime.backend import Backend
from conan_rag.testing import build_conan_layout_model, build_cross_encoder
from tests.texts import sts_chinese, sts_english

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LIMITS = (8, 128, 512)


def _texts() -> list[str]:
    en, zh = sts_english(200), sts_chinese(200)
    rng = random.Random(0)
    odd = ["", " ", "[SEP] [CLS] [MASK] <s></s>", "Ünïcödé\u200b\tTabs\nand  spaces", "a" * 3000]
    long = [" ".join(rng.choice(en[:200]) for _ in range(20)), "".join(zh[:60])]
    return [*en[:40], *zh[:40], *odd, *long]


@pytest.mark.parametrize("which", ["minilm", "conan"])
def test_embedding_ids_equal_the_tokenizers_call(which: str, tmp_path: Path) -> None:
    if which == "minilm":
        folder = resolve_model(MINILM)
    else:
        folder = build_conan_layout_model(tmp_path / "m", hidden_size=32, num_layers=1)
    backend = Backend(read_model_spec(folder), "cpu", "float32", compile="off")
    texts = _texts()
    for limit in LIMITS:
        want = backend.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        assert backend.tokenize(texts, limit) == want, limit


@pytest.mark.parametrize("layout", ["bert", "xlmr"])
def test_pair_ids_and_types_equal_the_tokenizers_call(layout: str, tmp_path: Path) -> None:
    folder = build_cross_encoder(tmp_path / layout, layout=layout)  # type: ignore[arg-type]
    runner = CrossEncoderRunner(read_cross_encoder_spec(folder), "cpu", "float32")
    texts = _texts()
    queries, passages = texts, [*texts[1:], texts[0]]
    for limit in LIMITS:
        want = runner.tokenizer(
            queries,
            passages,
            truncation="longest_first",
            max_length=limit,
            return_token_type_ids=runner.wants_token_types,
        )
        rows = runner.tokenize_pairs(queries, passages, limit)
        assert [row.ids for row in rows] == want["input_ids"], limit
        if runner.wants_token_types:
            assert [row.type_ids for row in rows] == want["token_type_ids"], limit
        singles = runner.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        assert [row.ids for row in runner.tokenize(texts, limit)] == singles, limit
