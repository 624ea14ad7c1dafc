"""Encoder behaviour: sharing, thread safety, bad input, truncation, weights loading."""

from __future__ import annotations

import os
import pickle
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import conan_rag.encoder as encoder_module
import conan_rag.registry as registry
from conan_rag import ConanConfigError, ConanModelError, EncoderConfig, load_encoder
from conan_rag.errors import ConanTypeError, DeviceOutOfMemoryError
from conan_rag.runtime.backend import Backend
from conan_rag.testing import build_conan_layout_model
from tests.texts import sts_chinese, sts_english


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> encoder_module.Encoder:
    return load_encoder(str(minilm_path), device="cpu", dtype="float32")


def test_empty_list_gives_zero_rows(minilm: encoder_module.Encoder) -> None:
    out = minilm.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


@pytest.mark.parametrize("bad", [None, b"bytes", 3])
def test_non_string_names_its_index(minilm: encoder_module.Encoder, bad: object) -> None:
    with pytest.raises(ConanTypeError, match=r"texts\[1\] is") as info:
        minilm.encode(["ok", bad])  # type: ignore[list-item]
    assert info.value.index == 1 and isinstance(info.value, TypeError)


def test_single_string_is_refused_with_fix(minilm: encoder_module.Encoder) -> None:
    with pytest.raises(TypeError, match=r"encode\(\[text\]\)"):
        minilm.encode("hello")


def test_unknown_kind_lists_choices(minilm: encoder_module.Encoder) -> None:
    with pytest.raises(ConanConfigError, match="'query', 'document'"):
        minilm.encode(["x"], kind="passage")  # type: ignore[arg-type]


def test_over_long_text_is_truncated_at_max_seq_length(minilm: encoder_module.Encoder) -> None:
    words = " ".join(sts_english(200))
    (ids,) = minilm.tokenize([words])
    assert len(ids) == minilm.max_seq_length == 256
    longer = words + " " + words
    a, b = minilm.encode([words, longer])
    assert float(a @ b) > 0.99999  # everything past the limit is ignored


def test_vectors_are_unit_length_unless_asked(minilm: encoder_module.Encoder) -> None:
    vectors = minilm.encode(["a cat", "中文句子"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_raw_vectors_of_conan_layout_are_not_normalized(conan_tiny: Path) -> None:
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    raw = encoder.encode(["细胞", "gene"], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    unit = encoder.encode(["细胞", "gene"])
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)


def test_truncate_dim_keeps_prefix_and_renormalizes(conan_tiny: Path) -> None:
    full = load_encoder(str(conan_tiny), device="cpu", dtype="float32")
    small = load_encoder(str(conan_tiny), device="cpu", dtype="float32", truncate_dim=48)
    assert small.dim == 48 and small.backend is full.backend
    raw = full.encode(["蛋白质结构"], normalize=False)[0, :48]
    vec = small.encode(["蛋白质结构"])[0]
    assert vec.shape == (48,)
    assert np.allclose(vec, raw / np.linalg.norm(raw), atol=1e-5)
    assert small.fingerprint != full.fingerprint
    with pytest.raises(ConanConfigError, match="exceeds the model's dimension 112"):
        load_encoder(str(conan_tiny), device="cpu", dtype="float32", truncate_dim=113)


def test_same_instance_and_weights_loaded_once(conan_models: dict[str, Path]) -> None:
    folder = str(conan_models["mean"])
    before = registry.loaded_backends()
    first = load_encoder(folder, device="cpu", dtype="float32")
    again = load_encoder(folder + "/", device="cpu", dtype="float32")
    assert first is again
    other_prompt = load_encoder(folder, device="cpu", dtype="float32", query_prompt="q: ")
    assert other_prompt is not first and other_prompt.backend is first.backend
    assert registry.loaded_backends() <= before + 1


def test_racing_threads_load_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = build_conan_layout_model(tmp_path / "race", hidden_size=32, num_layers=1, seed=7)
    calls: list[int] = []
    real_init = Backend.__init__

    def counting_init(self: Backend, *args: object, **kwargs: object) -> None:
        calls.append(1)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Backend, "__init__", counting_init)
    barrier = threading.Barrier(8)

    def load() -> encoder_module.Encoder:
        barrier.wait()
        return load_encoder(str(folder), device="cpu", dtype="float32")

    with ThreadPoolExecutor(8) as pool:
        encoders = list(pool.map(lambda _: load(), range(8)))
    assert len({id(e) for e in encoders}) == 1
    assert len(calls) == 1


def test_concurrent_encode_equals_sequential(minilm: encoder_module.Encoder) -> None:
    texts = sts_english(96) + sts_chinese(64)
    requests = [texts[i : i + 5] for i in range(0, len(texts), 5)]
    expected = [minilm.encode(r) for r in requests]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(minilm.encode, requests))
    for want, have in zip(expected, got):
        assert (want * have).sum(axis=1).min() >= 0.99999


def test_fingerprint_is_stable_and_model_specific(conan_models: dict[str, Path]) -> None:
    a = load_encoder(str(conan_models["cls"]), device="cpu", dtype="float32")
    b = load_encoder(str(conan_models["cls_bin"]), device="cpu", dtype="float32")
    assert a.fingerprint == a.fingerprint and len(a.fingerprint) == 16
    assert a.fingerprint != b.fingerprint  # other weights
    bf16 = load_encoder(str(conan_models["cls"]), device="cpu", dtype="bfloat16")
    assert bf16.fingerprint == a.fingerprint  # dtype does not change what the vectors mean


def test_config_round_trip_rebuilds_same_encoder(conan_tiny: Path, tmp_path: Path) -> None:
    encoder = load_encoder(str(conan_tiny), device="cpu", dtype="float32", truncate_dim=64)
    encoder.config.save(tmp_path / "encoder.json")
    config = EncoderConfig.load(tmp_path / "encoder.json")
    assert config == encoder.config
    assert load_encoder(config=config) is encoder


def test_unknown_setting_lists_valid_ones() -> None:
    with pytest.raises(ConanConfigError, match="truncate_dim"):
        EncoderConfig.from_dict({"truncate_dims": 3})
    with pytest.raises(ConanConfigError, match="bogus"):
        load_encoder("sentence-transformers/all-MiniLM-L6-v2", bogus=1)


def test_bad_device_and_dtype_list_choices() -> None:
    with pytest.raises(ConanConfigError, match="'cpu', 'cuda'"):
        load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="tpu")
    with pytest.raises(ConanConfigError, match="'bfloat16'"):
        load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu", dtype="int4")


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_missing_transformer_weights(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path, "noweights")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ConanModelError, match="transformer's weights are missing"):
        load_encoder(str(folder), device="cpu")


def test_corrupt_safetensors_is_named(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path, "corrupt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConanModelError, match="model.safetensors"):
        load_encoder(str(folder), device="cpu")


def test_safetensors_preferred_over_bin(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path, "prefer")
    (folder / "pytorch_model.bin").write_bytes(b"garbage that is never read")
    (folder / "2_Dense" / "pytorch_model.bin").write_bytes(b"garbage")
    vec = load_encoder(str(folder), device="cpu", dtype="float32").encode(["细胞"])
    ref = load_encoder(str(conan_tiny), device="cpu", dtype="float32").encode(["细胞"])
    assert float((vec * ref).sum()) > 0.99999


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_bin_is_never_executed(
    conan_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(conan_models["cls_bin"], tmp_path, "evil")
    monkeypatch.chdir(tmp_path)
    with (folder / "2_Dense" / "pytorch_model.bin").open("wb") as fh:
        pickle.dump({"linear.weight": _Payload()}, fh)
    with pytest.raises(ConanModelError, match="weights_only=True"):
        load_encoder(str(folder), device="cpu")
    torch.save({"x": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ConanModelError):
        load_encoder(str(folder), device="cpu")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_out_of_memory_splits_the_batch_and_caps_later_plans(
    conan_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # float32: the vectors after the split must equal the unsplit ones exactly.
    encoder = load_encoder(
        str(conan_tiny), device="cpu", dtype="float32", token_budget=4096, use_queue=False
    )
    backend = encoder.backend
    real = Backend.embed_ids
    sizes: list[int] = []

    def flaky(self: Backend, ids: list[list[int]], prompt_length: int = 0) -> torch.Tensor:
        sizes.append(len(ids))
        if len(ids) > 8:  # fault injection: pretend the device has room for 8 texts
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, ids, prompt_length)

    texts = sts_english(40)
    expected = encoder.encode(texts)
    monkeypatch.setattr(backend, "memory_cap", None)
    monkeypatch.setattr(Backend, "embed_ids", flaky)
    got = encoder.encode(texts)
    assert (got * expected).sum(axis=1).min() >= 0.99999
    assert max(sizes) > 8 and any(s <= 8 for s in sizes)
    # the device's limit is recorded apart: the encoder's own budget is never rewritten
    assert backend.memory_cap is not None and backend.budget(4096) < 4096
    assert encoder.token_budget == 4096

    def always_oom(self: Backend, ids: list[list[int]], prompt_length: int = 0) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(Backend, "embed_ids", always_oom)
    with pytest.raises(DeviceOutOfMemoryError, match="Out of memory") as info:
        encoder.encode(["one text"])
    assert info.value.tokens == len(encoder.tokenize(["one text"])[0])


@pytest.mark.parametrize("use_queue", [True, False])
def test_token_budget_is_per_encoder(
    conan_tiny: Path, monkeypatch: pytest.MonkeyPatch, use_queue: bool
) -> None:
    # Two encoders on one set of weights, each with its own budget: each plans its own batches.
    small = load_encoder(
        str(conan_tiny), device="cpu", dtype="float32", token_budget=64, use_queue=use_queue
    )
    large = load_encoder(
        str(conan_tiny), device="cpu", dtype="float32", token_budget=8192, use_queue=use_queue
    )
    assert small.backend is large.backend and (small.token_budget, large.token_budget) == (64, 8192)
    costs: list[int] = []
    real = Backend.embed_ids

    def recording(self: Backend, ids: list[list[int]], prompt_length: int = 0) -> torch.Tensor:
        costs.append(len(ids) * max(len(x) for x in ids))
        return real(self, ids, prompt_length)

    monkeypatch.setattr(Backend, "embed_ids", recording)
    texts = [f"细胞 gene {i} 蛋白质" for i in range(60)]  # ~9 tokens each
    want = large.encode(texts)
    assert max(costs) > 64  # the large budget batches many texts together
    costs.clear()
    got = small.encode(texts)
    assert max(costs) <= 64 and len(costs) > 5
    assert (got * want).sum(axis=1).min() >= 0.99999
    costs.clear()
    large.encode(texts)
    assert max(costs) > 64  # the small encoder did not change the shared weights' budget


def test_model_id_is_canonical_whatever_spelling_loaded_it(
    minilm_path: Path, conan_tiny: Path
) -> None:
    by_folder = load_encoder(str(minilm_path), device="cpu", dtype="float32")
    by_id = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu", dtype="float32")
    assert by_id is by_folder  # same resolved model: one instance
    assert by_id.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    relative = os.path.relpath(conan_tiny)
    assert load_encoder(relative, device="cpu", dtype="float32").model_id == str(conan_tiny)
