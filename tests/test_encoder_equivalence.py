"""Our vectors equal sentence-transformers' on the real MiniLM and on Conan-layout models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from conan_rag import load_encoder
from tests.texts import varied_texts


def _st_vectors(folder: Path, texts: list[str], **kwargs: object) -> np.ndarray:
    model = SentenceTransformer(str(folder), device="cpu", **kwargs)  # type: ignore[arg-type]
    return np.asarray(model.encode(texts, normalize_embeddings=True, batch_size=64))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    items = varied_texts()
    assert len(items) >= 500
    return items


@pytest.fixture(scope="module")
def st_minilm(minilm_path: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' float32 vectors of ``texts`` (computed once for the module)."""
    return _st_vectors(minilm_path, texts)


def test_minilm_fp32_matches_sentence_transformers(
    minilm_path: Path, texts: list[str], st_minilm: np.ndarray
) -> None:
    ours = load_encoder(str(minilm_path), device="cpu", dtype="float32").encode(texts)
    ref = st_minilm
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(texts), 384)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.99999, f"worst text: {texts[int(cos.argmin())]!r}"


@pytest.mark.slow
def test_minilm_bf16_close_to_sentence_transformers_fp32(
    minilm_path: Path, texts: list[str], st_minilm: np.ndarray
) -> None:
    ours = load_encoder(str(minilm_path), device="cpu", dtype="bfloat16").encode(texts)
    ref = st_minilm
    assert ours.dtype == np.float32
    assert (ours * ref).sum(axis=1).min() >= 0.999


@pytest.mark.parametrize("variant", ["cls", "mean", "cls_bin"])
def test_conan_layout_matches_sentence_transformers(
    conan_models: dict[str, Path], variant: str, texts: list[str]
) -> None:
    folder = conan_models[variant]
    sample = texts[::3]
    encoder = load_encoder(str(folder), device="cpu", dtype="float32")
    ours = encoder.encode(sample)
    ref = _st_vectors(folder, sample)
    assert encoder.dim == 112 == ref.shape[1]  # hidden 64 x 1.75, like Conan's 1024 -> 1792
    assert encoder.max_seq_length == 512
    assert (ours * ref).sum(axis=1).min() >= 0.99999


def test_query_prompt_matches_sentence_transformers_prompts(tmp_path: Path) -> None:
    from conan_rag.testing import build_conan_layout_model

    folder = build_conan_layout_model(
        tmp_path / "prompted", pooling="mean", prompts={"query": "查询：", "document": ""}
    )
    texts = ["细胞中的蛋白质", "gene and protein"]
    encoder = load_encoder(str(folder), device="cpu", dtype="float32")
    model = SentenceTransformer(str(folder), device="cpu")
    ref_q = model.encode(texts, prompt_name="query", normalize_embeddings=True)
    ref_d = model.encode(texts, normalize_embeddings=True)
    assert (encoder.encode(texts, kind="query") * ref_q).sum(1).min() >= 0.99999
    assert (encoder.encode(texts, kind="document") * ref_d).sum(1).min() >= 0.99999
    # and the query prompt really changes the vectors
    assert (encoder.encode(texts, kind="query") * ref_d).sum(1).max() < 0.9999


def test_batch_invariance(minilm_path: Path, texts: list[str]) -> None:
    encoder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    together = encoder.encode(texts[:120])
    alone = np.stack([encoder.encode([t])[0] for t in texts[:120:7]])
    assert (together[::7] * alone).sum(axis=1).min() >= 0.99999
    mixed = encoder.encode(list(reversed(texts[:120])) + texts[300:340])
    assert (mixed[:120][::-1] * together).sum(axis=1).min() >= 0.99999
