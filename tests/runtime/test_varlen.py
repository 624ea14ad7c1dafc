"""The unpadded forward equals the padded one: packing, attention kernels, pooling, backend."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conan_rag.model.spec import read_model_spec
from conan_rag.runtime.backend import Backend
from conan_rag.runtime.varlen import (
    choose_attention,
    embed_varlen,
    pack,
    unpack,
    varlen_forward,
    varlen_supported,
)
from conan_rag.testing import build_conan_layout_model
from tests.texts import sts_chinese, sts_english

CPU = torch.device("cpu")


def _backend(folder: Path, dtype: str = "float32") -> Backend:
    return Backend(read_model_spec(folder), device="cpu", dtype=dtype)


def _mixed_ids(backend: Backend) -> list[list[int]]:
    # Chinese first: the tiny Conan-layout vocab spells most English words [UNK]
    texts = sts_chinese(20) + sts_english(8) + ["", "x", "".join(sts_chinese(40))]
    return backend.tokenize(texts, 96)  # lengths from 2 to 96 tokens


def _min_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())


def test_pack_and_unpack_round_trip() -> None:
    ids = [[5, 6, 7], [8], [9, 10]]
    packed = pack(ids, CPU)
    assert packed.input_ids.tolist() == [5, 6, 7, 8, 9, 10]
    assert packed.position_ids.tolist() == [0, 1, 2, 0, 0, 1]
    assert packed.cu_seqlens.dtype == torch.int32 and packed.cu_seqlens.tolist() == [0, 3, 4, 6]
    assert packed.offsets.dtype == torch.int64 and packed.rows.tolist() == [0, 0, 0, 1, 2, 2]
    assert packed.lengths == (3, 1, 2) and packed.max_len == 3 and packed.total == 6
    values = torch.arange(12.0).view(6, 2)
    padded, mask = unpack(values, packed)
    assert padded.shape == (3, 3, 2)
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert padded[2, 1].tolist() == [10.0, 11.0] and padded[1, 1].tolist() == [0.0, 0.0]
    assert torch.equal(padded[packed.rows, packed.position_ids], values)  # and back
    with pytest.raises(ValueError, match="empty"):
        pack([[1], []], CPU)


@pytest.mark.parametrize("attention", ["nested", "padded"])
def test_varlen_hidden_states_equal_padded_forward(conan_tiny: Path, attention: str) -> None:
    backend = _backend(conan_tiny)
    ids = _mixed_ids(backend)
    input_ids, mask = backend._tensors(ids)
    with torch.inference_mode():
        padded = backend.transformer(input_ids=input_ids, attention_mask=mask).last_hidden_state
    packed = pack(ids, CPU)
    hidden = varlen_forward(backend.transformer, packed, attention=attention)  # type: ignore[arg-type]
    assert hidden.shape == (sum(len(x) for x in ids), 64)
    want = padded[mask.bool()]  # row-major = packed order
    assert torch.allclose(hidden, want, atol=1e-4, rtol=1e-4)
    assert _min_cos(hidden, want) >= 0.99999
    assert not torch.allclose(hidden[0], hidden[len(ids[0])])  # different sequences differ


@pytest.mark.parametrize("variant", ["cls", "mean"])
@pytest.mark.parametrize("attention", ["nested", "padded"])
def test_conan_layout_varlen_embeddings_equal_padded(
    conan_models: dict[str, Path], variant: str, attention: str
) -> None:
    backend = _backend(conan_models[variant])
    ids = _mixed_ids(backend)
    got = embed_varlen(backend.transformer, backend.head, ids, attention=attention)  # type: ignore[arg-type]
    want = backend.embed_ids(ids)
    assert got.shape == want.shape == (len(ids), 112) and got.dtype == torch.float32
    assert _min_cos(got, want) >= 0.99999


def test_minilm_varlen_embeddings_equal_padded(minilm_path: Path) -> None:
    backend = _backend(minilm_path)
    ids = _mixed_ids(backend)
    for attention in ("nested", "padded"):
        got = embed_varlen(backend.transformer, backend.head, ids, attention=attention)  # type: ignore[arg-type]
        assert _min_cos(got, backend.embed_ids(ids)) >= 0.99999


def test_prompt_skipping_pooling_through_packed_tokens(tmp_path: Path) -> None:
    folder = build_conan_layout_model(tmp_path / "m", pooling="cls", weights="safetensors")
    config_file = folder / "1_Pooling" / "config.json"
    config_file.write_text(
        json.dumps({**json.loads(config_file.read_text()), "include_prompt": False})
    )
    backend = _backend(folder)
    ids = _mixed_ids(backend)[:20]
    got, want = (
        embed_varlen(backend.transformer, backend.head, ids, prompt_length=1),
        backend.embed_ids(ids, 1),
    )
    assert _min_cos(got, want) >= 0.99999
    assert _min_cos(got, backend.embed_ids(ids, 0)) < 0.9999  # skipping [CLS] matters


def test_backend_varlen_mode_through_the_encoder_path(conan_tiny: Path) -> None:
    padded, varlen = _backend(conan_tiny), _backend(conan_tiny)
    assert padded.forward_mode == "padded"  # the automatic choice on CPU
    varlen.forward_mode = "varlen"  # what CUDA picks for BERT
    ids = _mixed_ids(padded)
    batches = [[0, 1, 2], list(range(3, len(ids)))]
    got = [(b, varlen.embed([ids[i] for i in b])) for b in batches]
    want = [(b, padded.embed([ids[i] for i in b])) for b in batches]
    for (order_a, a), (order_b, b) in zip(got, want, strict=True):
        assert order_a == order_b and _min_cos(a, b) >= 0.99999


def test_bf16_varlen_close_to_fp32_padded(conan_tiny: Path) -> None:
    bf16, fp32 = _backend(conan_tiny, "bfloat16"), _backend(conan_tiny)
    ids = _mixed_ids(fp32)
    got = embed_varlen(bf16.transformer, bf16.head, ids, attention="nested")
    assert got.dtype == torch.float32
    assert _min_cos(got, fp32.embed_ids(ids)) >= 0.99


def test_which_models_and_attention_kernels(conan_tiny: Path) -> None:
    backend = _backend(conan_tiny)
    assert varlen_supported(backend.transformer)
    roberta = SimpleNamespace(config=SimpleNamespace(model_type="xlm-roberta"))
    relative = SimpleNamespace(
        config=SimpleNamespace(model_type="bert", position_embedding_type="relative_key")
    )
    assert not varlen_supported(roberta) and not varlen_supported(relative)
    assert not varlen_supported(torch.nn.Linear(2, 2))
    assert choose_attention(CPU, torch.float32) == "nested"
    assert choose_attention(CPU, torch.float32, "padded") == "padded"
    with pytest.raises(ValueError, match="flash-attn"):
        choose_attention(CPU, torch.bfloat16, "flash")
    with pytest.raises(ValueError, match="choose one of"):
        choose_attention(CPU, torch.float32, "xformers")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_uses_varlen_and_matches_fp32(conan_tiny: Path) -> None:
    spec = read_model_spec(conan_tiny)
    gpu = Backend(spec, device="cuda", dtype="bfloat16")
    assert gpu.forward_mode == "varlen"
    cpu = _backend(conan_tiny)
    ids = _mixed_ids(cpu)
    assert _min_cos(gpu.embed_ids(ids), cpu.embed_ids(ids)) >= 0.99
    for attention in ("nested", "padded"):
        got = embed_varlen(gpu.transformer, gpu.head, ids, attention=attention)  # type: ignore[arg-type]
        assert _min_cos(got, cpu.embed_ids(ids)) >= 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp32_varlen_equals_padded(minilm_path: Path) -> None:
    gpu = Backend(read_model_spec(minilm_path), device="cuda", dtype="float32")
    ids = _mixed_ids(gpu)
    gpu.forward_mode = "padded"
    want = gpu.embed_ids(ids)
    gpu.forward_mode = "varlen"
    assert _min_cos(gpu.embed_ids(ids), want) >= 0.9999
