"""Read a sentence-transformers folder's configs into a :class:`ModelSpec`, before any weights.

A model folder is data, not code: this module only reads JSON and lists files. It never imports
anything a config names (activations come from the fixed table :data:`ACTIVATIONS`) and the
folder's ``auto_map`` (custom model code) is refused.

Example:
    >>> from conan_rag.model.files import resolve_model
    >>> spec = read_model_spec(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    >>> spec.pooling.mode, spec.output_dim
    ('mean', 384)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from torch import nn

from conan_rag.errors import ConanModelError
from conan_rag.model.files import WEIGHT_FILES, download_hint, weight_file

PoolingMode = Literal["cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)

# How configs spell the pooling mode: six booleans (old configs) or a name (some aliases).
_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_POOLING_ALIASES: dict[str, PoolingMode] = {
    "cls_token": "cls",
    "mean_tokens": "mean",
    "max_tokens": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
}

# The Dense activations a config may name. A fixed table: a config never makes us import code.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}
# sentence-transformers records the class path, e.g. "torch.nn.modules.linear.Identity".
_ACTIVATION_PATHS = {f"{cls.__module__}.{cls.__name__}": name for name, cls in ACTIVATIONS.items()}


@dataclass(frozen=True)
class PoolingSpec:
    """How token vectors become one sentence vector (sentence-transformers ``Pooling``)."""

    mode: PoolingMode
    dim: int
    include_prompt: bool = True


@dataclass(frozen=True)
class DenseSpec:
    """One ``Dense`` layer: its folder, shape, bias and activation (a key of ACTIVATIONS)."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything read from a sentence-transformers folder, before any weights are loaded."""

    path: Path
    max_seq_length: int
    do_lower_case: bool
    pooling: PoolingSpec
    dense: tuple[DenseSpec, ...] = ()
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)

    @property
    def output_dim(self) -> int:
        """Dimension of the vectors the full module stack produces."""
        return self.dense[-1].out_features if self.dense else self.pooling.dim


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConanModelError(
            f"Missing file {path}. {download_hint(path.parent.name)}", path=path
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConanModelError(
            f"Corrupt JSON in {path}: {exc}. Re-download the model.", path=path
        ) from None
    if not isinstance(data, (dict, list)):
        raise ConanModelError(
            f"{path} should hold a JSON object. Re-download the model.", path=path
        )
    return cast(dict[str, Any], data) if isinstance(data, dict) else {"__list__": data}


def _pooling_spec(config: dict[str, Any], folder: Path) -> PoolingSpec:
    mode: Any = config.get("pooling_mode")
    if mode is None:
        chosen = [name for flag, name in _POOLING_FLAGS.items() if config.get(flag)]
        if len(chosen) > 1:
            raise ConanModelError(
                f"{folder / 'config.json'} enables {len(chosen)} pooling modes {chosen}; "
                f"conan-rag supports exactly one of {list(POOLING_MODES)}."
            )
        mode = chosen[0] if chosen else None
    if mode is None or mode == []:
        mode = "mean"  # sentence-transformers' default when a config enables no mode
    if isinstance(mode, list):
        if len(mode) != 1:
            raise ConanModelError(
                f"{folder / 'config.json'} concatenates pooling modes {mode}; conan-rag supports "
                f"exactly one of {list(POOLING_MODES)}."
            )
        mode = mode[0]
    mode = _POOLING_ALIASES.get(mode, mode)
    if mode not in POOLING_MODES:
        raise ConanModelError(
            f"{folder / 'config.json'} names pooling mode {mode!r}; valid modes are "
            f"{list(POOLING_MODES)}."
        )
    dim = config.get("word_embedding_dimension") or config.get("embedding_dimension")
    if not isinstance(dim, int):
        raise ConanModelError(f"{folder / 'config.json'} lacks word_embedding_dimension.")
    return PoolingSpec(cast(PoolingMode, mode), dim, bool(config.get("include_prompt", True)))


def _dense_spec(config: dict[str, Any], folder: Path) -> DenseSpec:
    raw = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    activation = _ACTIVATION_PATHS.get(raw, raw.lower())
    if activation not in ACTIVATIONS:
        raise ConanModelError(
            f"{folder / 'config.json'} names activation {raw!r}; conan-rag loads only "
            f"{sorted(_ACTIVATION_PATHS)} (it never imports code a config names)."
        )
    try:
        spec = DenseSpec(
            folder,
            int(config["in_features"]),
            int(config["out_features"]),
            bool(config.get("bias", True)),
            activation,
        )
    except KeyError as exc:
        raise ConanModelError(f"{folder / 'config.json'} lacks {exc.args[0]!r}.") from None
    if weight_file(folder) is None:
        raise ConanModelError(
            f"{folder} has neither {' nor '.join(WEIGHT_FILES)}: the Dense layer's weights "
            "are missing; re-download the model.",
            path=folder,
        )
    return spec


def _module_kind(entry: dict[str, Any]) -> str:
    # "sentence_transformers.models.Dense", "...sentence_transformer.modules.dense.Dense", ...
    return str(entry.get("type", "")).rsplit(".", 1)[-1].lower()


def _require_modules_json(folder: Path) -> None:
    """Raise, with the fix, when ``folder`` is not a sentence-transformers folder."""
    if (folder / "modules.json").is_file():
        return
    hint = ""
    if (folder / "config.json").is_file():
        hint = (
            " It looks like a plain transformers folder: add a modules.json and "
            "1_Pooling/config.json (or load it with sentence-transformers and save it), "
            f"choosing a pooling mode from {list(POOLING_MODES)} — BERT-style embedding "
            "models usually use 'cls' or 'mean'."
        )
    raise ConanModelError(
        f"{folder} has no modules.json, so it is not a sentence-transformers model "
        f"folder.{hint or ' ' + download_hint(folder.name)}",
        path=folder,
    )


def _check_dimensions(
    folder: Path, hidden: int, pooling: PoolingSpec | None, dense: list[DenseSpec]
) -> PoolingSpec:
    """The pooling spec, once Transformer, Pooling and Dense are known to fit together."""
    if pooling is None:
        raise ConanModelError(
            f"{folder / 'modules.json'} has no Pooling module; add one with a mode from "
            f"{list(POOLING_MODES)}."
        )
    if hidden and pooling.dim != hidden:
        raise ConanModelError(
            f"Pooling expects {pooling.dim}-d token vectors but the transformer's hidden_size "
            f"is {hidden} ({folder / 'config.json'}); the model folder is inconsistent."
        )
    width = pooling.dim
    for layer in dense:
        if layer.in_features != width:
            raise ConanModelError(
                f"Dense layer {layer.path.name} takes {layer.in_features}-d input but receives "
                f"{width}-d vectors from the module before it; the model folder is inconsistent."
            )
        width = layer.out_features
    return pooling


def read_model_spec(folder: Path) -> ModelSpec:
    """Read ``modules.json`` and the configs it points to.

    Args:
        folder: a resolved model folder (see :func:`~conan_rag.model.files.resolve_model`).

    Raises:
        ConanModelError: a file is missing or corrupt, a module is unsupported, or the
            dimensions of Transformer, Pooling and Dense disagree.
    """
    _require_modules_json(folder)
    modules = _read_json(folder / "modules.json").get("__list__")
    if not isinstance(modules, list) or not modules:
        raise ConanModelError(f"{folder / 'modules.json'} should be a non-empty JSON list.")
    hf_config = _read_json(folder / "config.json")
    if hf_config.get("auto_map"):
        raise ConanModelError(
            f"{folder / 'config.json'} asks for custom model code (auto_map); conan-rag never "
            "runs code shipped in a model folder. Use a model with a built-in architecture."
        )
    hidden = int(hf_config.get("hidden_size") or hf_config.get("d_model") or 0)
    max_seq_length = int(hf_config.get("max_position_embeddings", 512))
    do_lower_case = False
    pooling: PoolingSpec | None = None
    dense: list[DenseSpec] = []
    normalize = False
    for entry in sorted(modules, key=lambda e: int(e.get("idx", 0))):
        kind = _module_kind(entry)
        sub = folder / str(entry.get("path", ""))
        if kind == "transformer":
            if str(entry.get("path", "")) not in ("", "."):
                raise ConanModelError(
                    f"{folder / 'modules.json'}: the Transformer must sit at the folder root."
                )
            st_config_path = folder / "sentence_bert_config.json"
            if st_config_path.is_file():
                st_config = _read_json(st_config_path)
                max_seq_length = int(st_config.get("max_seq_length") or max_seq_length)
                do_lower_case = bool(st_config.get("do_lower_case", False))
        elif kind == "pooling":
            pooling = _pooling_spec(_read_json(sub / "config.json"), sub)
        elif kind == "dense":
            dense.append(_dense_spec(_read_json(sub / "config.json"), sub))
        elif kind == "normalize":
            normalize = True
        else:
            raise ConanModelError(
                f"{folder / 'modules.json'} lists module {entry.get('type')!r}; conan-rag "
                "supports Transformer, Pooling, Dense and Normalize."
            )
    pooling = _check_dimensions(folder, hidden, pooling, dense)
    prompts: dict[str, str] = {}
    prompt_file = folder / "config_sentence_transformers.json"
    if prompt_file.is_file():
        raw_prompts = _read_json(prompt_file).get("prompts") or {}
        prompts = {str(k): str(v) for k, v in dict(raw_prompts).items()}
    return ModelSpec(
        path=folder,
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        pooling=pooling,
        dense=tuple(dense),
        normalize=normalize,
        prompts=prompts,
    )
