"""Model folders: resolution, config parsing, and clear errors for bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conan_rag.errors import ConanModelError, ModelNotFoundError
from conan_rag.model.files import BUNDLED_MINILM, resolve_model
from conan_rag.model.spec import POOLING_MODES, read_model_spec


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def test_bundled_minilm_resolves_offline(minilm_path: Path) -> None:
    assert resolve_model(BUNDLED_MINILM) == minilm_path
    spec = read_model_spec(minilm_path)
    assert (spec.pooling.mode, spec.output_dim, spec.max_seq_length) == ("mean", 384, 256)
    assert spec.normalize is True and spec.dense == ()


def test_conan_layout_spec(conan_tiny: Path) -> None:
    spec = read_model_spec(conan_tiny)
    assert spec.pooling.mode == "cls"
    assert spec.max_seq_length == 512
    assert spec.normalize is False
    (dense,) = spec.dense
    assert (dense.in_features, dense.out_features, dense.bias, dense.activation) == (
        64,
        112,
        True,
        "identity",
    )


def test_missing_folder_names_download_command() -> None:
    with pytest.raises(ModelNotFoundError, match="hf download TencentBAC/Conan-embedding-v1"):
        resolve_model("/no/such/folder/Conan-embedding-v1")


def test_uncached_hub_id_names_download_command() -> None:
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache") as info:
        resolve_model("TencentBAC/Conan-embedding-v1-not-here")
    message = str(info.value)
    # today's command and the one older huggingface_hub releases ship, for this very model
    assert "`hf download TencentBAC/Conan-embedding-v1-not-here`" in message
    assert "`huggingface-cli download TencentBAC/Conan-embedding-v1-not-here`" in message
    assert info.value.model == "TencentBAC/Conan-embedding-v1-not-here"
    assert "--model" not in message  # library errors name no command-line flags


def test_plain_transformers_folder_says_which_pooling(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    (folder / "modules.json").unlink()
    with pytest.raises(ConanModelError, match="pooling mode") as info:
        read_model_spec(folder)
    assert "'cls'" in str(info.value) and "'mean'" in str(info.value)


def test_corrupt_json_is_named(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    (folder / "1_Pooling" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConanModelError, match=r"1_Pooling/config\.json"):
        read_model_spec(folder)


def test_dense_dimension_disagreement(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    path = folder / "2_Dense" / "config.json"
    config = json.loads(path.read_text())
    config["in_features"] = 65
    path.write_text(json.dumps(config))
    with pytest.raises(ConanModelError, match="Dense layer 2_Dense takes 65-d input"):
        read_model_spec(folder)


def test_pooling_dimension_disagreement(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    path = folder / "1_Pooling" / "config.json"
    config = json.loads(path.read_text())
    config["word_embedding_dimension"] = 128
    path.write_text(json.dumps(config))
    with pytest.raises(ConanModelError, match="hidden_size is 64"):
        read_model_spec(folder)


def test_missing_dense_weights(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    for name in ("model.safetensors", "pytorch_model.bin"):
        (folder / "2_Dense" / name).unlink()
    with pytest.raises(ConanModelError, match="Dense layer's weights are missing"):
        read_model_spec(folder)


def test_unknown_pooling_mode_lists_valid(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode": "median"})
    )
    with pytest.raises(ConanModelError, match="median") as info:
        read_model_spec(folder)
    assert all(mode in str(info.value) for mode in POOLING_MODES)


def test_activation_is_never_imported(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    path = folder / "2_Dense" / "config.json"
    config = json.loads(path.read_text())
    config["activation_function"] = "os.system"
    path.write_text(json.dumps(config))
    with pytest.raises(ConanModelError, match="never imports code"):
        read_model_spec(folder)


def test_custom_code_is_refused(conan_tiny: Path, tmp_path: Path) -> None:
    folder = _copy(conan_tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConanModelError, match="custom model code"):
        read_model_spec(folder)


@pytest.mark.parametrize(
    ("pooling_config", "mode"),
    [
        ({"pooling_mode": "lasttoken"}, "lasttoken"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean_sqrt_len"),
        ({"pooling_mode": "mean_sqrt_len_tokens"}, "mean_sqrt_len"),
        ({"pooling_mode_weightedmean_tokens": True}, "weightedmean"),
        ({}, "mean"),
    ],
)
def test_pooling_spellings(
    conan_tiny: Path, tmp_path: Path, pooling_config: dict[str, object], mode: str
) -> None:
    folder = _copy(conan_tiny, tmp_path)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, **pooling_config})
    )
    assert read_model_spec(folder).pooling.mode == mode


def test_tiny_conan_tokenizer_knows_chinese_and_english(conan_tiny: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(conan_tiny))
    tokens = tokenizer.tokenize("the cat 细胞中的蛋白质。")
    assert tokens == ["the", "cat", "细", "胞", "中", "的", "蛋", "白", "质", "。"]
