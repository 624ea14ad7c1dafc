"""The reranker's scores equal sentence-transformers' CrossEncoder.predict on BERT and XLM-R."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder

from conan_rag.errors import ConanConfigError, ConanModelError, ConanTypeError, ModelNotFoundError
from conan_rag.reranking import load_reranker
from conan_rag.reranking.registry import loaded_rerankers
from conan_rag.reranking.runner import PairTokens
from conan_rag.reranking.spec import read_cross_encoder_spec
from conan_rag.testing import build_cross_encoder
from tests.texts import sts_chinese, sts_english

MAX_LENGTH = 128
IDENTITY = "torch.nn.modules.linear.Identity"
# (layout, how the folder says it is a CrossEncoder, labels, recorded activation)
VARIANTS: dict[str, tuple[str, str, int, str | None]] = {
    "bert": ("bert", "config", 1, None),  # as cross-encoder/ms-marco-MiniLM-L6-v2
    "bert_modules_identity": ("bert", "modules", 1, IDENTITY),
    "bert_2_labels": ("bert", "modules", 2, None),
    "xlmr": ("xlmr", "none", 1, None),  # as BAAI/bge-reranker-v2-m3
    "xlmr_modules": ("xlmr", "modules", 1, None),
    "xlmr_2_labels": ("xlmr", "none", 2, None),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cross_encoders")
    return {
        name: build_cross_encoder(
            root / name,
            layout=layout,  # type: ignore[arg-type]
            st_config=st_config,  # type: ignore[arg-type]
            num_labels=labels,
            activation_fn=activation,
            max_length=MAX_LENGTH,
            seed=i,
        )
        for i, (name, (layout, st_config, labels, activation)) in enumerate(VARIANTS.items())
    }


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    en, zh = sts_english(60), sts_chinese(60)
    items = [(en[i], en[i + 1]) for i in range(0, 24, 2)]
    items += [(zh[i], zh[i + 1]) for i in range(0, 24, 2)]
    items += [(en[30], zh[31]), (zh[32], f"{en[33]} {zh[33]}")]  # mixed
    items += [(en[34], " ".join(en[:40]))]  # a passage far beyond max_length
    items += [(" ".join(zh[:12]), " ".join(zh[12:40]))]  # both long: "longest_first"
    items += [(en[35], ""), ("", zh[36])]  # empty sides
    return items


def _st_scores(folder: Path, pairs: list[tuple[str, str]], **kwargs: Any) -> np.ndarray:
    model = CrossEncoder(str(folder), device="cpu", **kwargs)
    return np.asarray(model.predict(pairs, batch_size=16), dtype=np.float32)


def _assert_equal(ours: np.ndarray, ref: np.ndarray, *, corr: float, diff: float) -> None:
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= corr
    assert float(np.abs(ours - ref).max()) <= diff, float(np.abs(ours - ref).max())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fp32_scores_equal_sentence_transformers(
    folders: dict[str, Path], pairs: list[tuple[str, str]], variant: str
) -> None:
    folder = folders[variant]
    # A small budget: many length-sorted batches, each padded to its own longest pair.
    reranker = load_reranker(str(folder), device="cpu", dtype="float32", token_budget=600)
    rows = reranker.tokenize(pairs)
    assert max(len(r) for r in rows) == MAX_LENGTH  # truncation is exercised
    ours = reranker.score_pairs(pairs)
    ref = _st_scores(folder, pairs)
    assert ref.std() > 0.01  # the random model tells pairs apart
    _assert_equal(ours, ref, corr=0.99999, diff=1e-4)
    labels, recorded = VARIANTS[variant][2:]
    expected = "identity" if recorded == IDENTITY or labels == 2 else "sigmoid"
    assert reranker.activation == expected and reranker.num_labels == labels
    assert ours.shape == ((len(pairs),) if labels == 1 else (len(pairs), labels))


def test_segment_ids_go_through_the_queue(folders: dict[str, Path]) -> None:
    bert = load_reranker(str(folders["bert"]), device="cpu", dtype="float32")
    rows = bert.tokenize([("a cat sat", "the dog 中国"), ("protein", "gene cell")])
    assert all(isinstance(r, PairTokens) for r in rows)
    assert (
        rows[0].type_ids == [0] * 7 + [1] * 5
    )  # [CLS] a cat s ##a ##t [SEP] | the dog 中 国 [SEP]
    with_types = bert.runner.embed(rows)
    without = bert.runner.embed([list(r) for r in rows])  # segment ids all 0
    assert float((with_types - without).abs().max()) > 1e-3  # so the equality test checks them
    assert torch.equal(bert.queue.submit(list(rows)).result(), with_types)
    xlmr = load_reranker(str(folders["xlmr"]), device="cpu", dtype="float32")
    assert not xlmr.runner.wants_token_types
    assert xlmr.tokenize([("a", "b")])[0].type_ids is None


def test_registry_shares_one_instance(folders: dict[str, Path]) -> None:
    folder = str(folders["xlmr"])
    first = load_reranker(folder, device="cpu", dtype="float32")
    count = loaded_rerankers()
    assert load_reranker(folder + "/", device="cpu", dtype="float32") is first
    short = load_reranker(folder, device="cpu", dtype="float32", max_length=32)
    assert short is not first and short.runner is first.runner and loaded_rerankers() == count
    assert pickle.loads(pickle.dumps(short)) is short
    assert short.model_id == str(folders["xlmr"].resolve())


def test_max_length_setting_matches_sentence_transformers(
    folders: dict[str, Path], pairs: list[tuple[str, str]]
) -> None:
    folder = folders["bert"]
    ours = load_reranker(str(folder), device="cpu", dtype="float32", max_length=32)
    _assert_equal(
        ours.score_pairs(pairs), _st_scores(folder, pairs, max_length=32), corr=0.99999, diff=1e-4
    )
    with pytest.raises(ConanConfigError, match="exceeds the model's limit 128"):
        load_reranker(str(folder), device="cpu", max_length=129)


def test_folder_limit_prompt_and_lower_case_match_sentence_transformers(
    folders: dict[str, Path], pairs: list[tuple[str, str]], tmp_path: Path
) -> None:
    folder = shutil.copytree(folders["xlmr_modules"], tmp_path / "prompted")
    module = json.loads((folder / "sentence_bert_config.json").read_text())
    module.update(max_seq_length=64, do_lower_case=True)
    (folder / "sentence_bert_config.json").write_text(json.dumps(module))
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    st.update(prompts={"query": "Query: "}, default_prompt_name="query")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st))
    sample = [*pairs[:4], ("The Cat SAT", "On The MAT"), pairs[-5]]
    reranker = load_reranker(str(folder), device="cpu", dtype="float32")
    assert reranker.max_length == 64 and reranker.spec.prompt == "Query: "
    _assert_equal(reranker.score_pairs(sample), _st_scores(folder, sample), corr=0.99999, diff=1e-4)


@pytest.mark.parametrize("variant", ["bert", "xlmr"])
def test_bf16_close_to_sentence_transformers_fp32(
    folders: dict[str, Path], pairs: list[tuple[str, str]], variant: str
) -> None:
    reranker = load_reranker(str(folders[variant]), device="cpu", dtype="bfloat16")
    assert reranker.dtype == "bfloat16"
    ours = reranker.score_pairs(pairs)
    _assert_equal(ours, _st_scores(folders[variant], pairs), corr=0.99, diff=0.02)


def test_concurrent_threads_get_their_own_scores(
    folders: dict[str, Path], pairs: list[tuple[str, str]]
) -> None:
    folder = str(folders["bert"])
    direct = load_reranker(folder, device="cpu", dtype="float32", use_queue=False)
    queued = load_reranker(folder, device="cpu", dtype="float32", batch_wait_ms=20.0)
    jobs = [(q, [p for _, p in pairs[i : i + 5]]) for i, (q, _) in enumerate(pairs[:12])]
    expected = [direct.score(q, ps) for q, ps in jobs]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(jobs))

    def call(i: int) -> None:
        barrier.wait()
        results[i] = queued.score(*jobs[i])

    before = queued.queue.batches_run
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, want in enumerate(expected):
        np.testing.assert_allclose(results[i], want, atol=1e-5)
    assert queued.queue.batches_run - before < len(jobs)  # callers shared batches

    async def together() -> list[np.ndarray]:
        return await asyncio.gather(*(queued.ascore(q, ps) for q, ps in jobs))

    for got, want in zip(asyncio.run(together()), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_rank_orders_by_score(folders: dict[str, Path], pairs: list[tuple[str, str]]) -> None:
    reranker = load_reranker(str(folders["xlmr"]), device="cpu", dtype="float32")
    query, passages = pairs[0][0], [p for _, p in pairs[:10]]
    scores = reranker.score(query, passages)
    ranked = reranker.rank(query, passages)
    assert sorted(i for i, _ in ranked) == list(range(10))
    assert [s for _, s in ranked] == sorted(scores.tolist(), reverse=True)
    assert all(scores[i] == pytest.approx(s) for i, s in ranked)
    assert reranker.rank(query, passages, top_k=3) == ranked[:3]
    assert asyncio.run(reranker.arank(query, passages, top_k=3)) == ranked[:3]
    # Two identical passages score alike to float32 rounding (a batch's rows may round apart on
    # some CPU kernels); the order follows the scores, and exact ties keep the input order.
    same = reranker.score(query, ["same", "same"])
    tie = reranker.rank(query, ["same", "same"])
    assert same[0] == pytest.approx(same[1], rel=1e-5)
    assert [i for i, _ in tie] == ([0, 1] if same[0] >= same[1] else [1, 0])
    assert [i for i, _ in reranker._ranked(np.array([0.5, 0.5, 0.7]), None)] == [2, 0, 1]
    assert reranker.score(query, []).shape == (0,) and reranker.rank(query, []) == []
    two = load_reranker(str(folders["xlmr_2_labels"]), device="cpu", dtype="float32")
    assert two.score(query, []).shape == (0, 2)
    with pytest.raises(ConanConfigError, match="single-label"):
        two.rank(query, passages)


def test_bad_inputs_name_the_culprit(folders: dict[str, Path]) -> None:
    reranker = load_reranker(str(folders["bert"]), device="cpu", dtype="float32")
    with pytest.raises(ConanTypeError, match="single string"):
        reranker.score("q", "a passage")  # type: ignore[arg-type]
    with pytest.raises(ConanTypeError, match=r"passages\[1\]"):
        reranker.score("q", ["ok", b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ConanTypeError, match=r"pairs\[0\]"):
        reranker.score_pairs([("only one",)])  # type: ignore[list-item]


def test_missing_model_gives_the_download_hint(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="hf download BAAI/bge-reranker-v2-m3"):
        load_reranker(str(tmp_path / "no-such-reranker"), device="cpu")
    with pytest.raises(ModelNotFoundError, match="hf download someone/not-cached-reranker"):
        load_reranker("someone/not-cached-reranker", device="cpu")


def test_an_embedding_model_is_not_a_reranker(minilm_path: Path) -> None:
    with pytest.raises(ConanModelError, match="ForSequenceClassification"):
        load_reranker(str(minilm_path), device="cpu")


def _edit(path: Path, **changes: Any) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_spec_follows_sentence_transformers_or_refuses(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(folders["xlmr_modules"], tmp_path / "spec")
    st_config = folder / "config_sentence_transformers.json"
    _edit(st_config, activation_fn="my_package.Activation")  # not torch: ST ignores it too
    assert read_cross_encoder_spec(folder).activation == "sigmoid"
    _edit(st_config, activation_fn="torch.nn.modules.activation.Hardtanh")
    with pytest.raises(ConanModelError, match="Hardtanh"):
        read_cross_encoder_spec(folder)
    _edit(st_config, activation_fn=IDENTITY)
    assert read_cross_encoder_spec(folder).activation == "identity"
    _edit(st_config, model_type="SentenceTransformer")  # ST then reads config.json only
    assert read_cross_encoder_spec(folder).activation == "sigmoid"
    _edit(folder / "config.json", auto_map={"AutoModel": "custom.Model"})
    with pytest.raises(ConanModelError, match="auto_map"):
        read_cross_encoder_spec(folder)
    _edit(folder / "config.json", auto_map=None, architectures=["Qwen3ForCausalLM"])
    with pytest.raises(ConanModelError, match="LLM reranker"):
        read_cross_encoder_spec(folder)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_bin_only_folder_loads_with_weights_only(
    pairs: list[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = build_cross_encoder(
        tmp_path / "bin", layout="bert", weights="bin", max_length=MAX_LENGTH, seed=7
    )
    assert not (folder / "model.safetensors").exists()
    calls: list[Any] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    reranker = load_reranker(str(folder), device="cpu", dtype="float32")
    monkeypatch.undo()
    assert calls and all(flag is True for flag in calls)
    _assert_equal(reranker.score_pairs(pairs), _st_scores(folder, pairs), corr=0.99999, diff=1e-4)

    evil = shutil.copytree(folder, tmp_path / "evil")
    torch.save({"classifier.weight": _Payload()}, evil / "pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConanModelError, match="weights_only=True"):
        load_reranker(str(evil), device="cpu")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
