"""Read a sentence-transformers ``CrossEncoder`` folder into a :class:`CrossEncoderSpec`.

A model folder is data: this module reads JSON only. It decides what
``sentence_transformers.CrossEncoder(folder)`` (version 6) would do with the folder, without
importing anything a config names:

* A folder with ``modules.json`` and ``"model_type": "CrossEncoder"`` in
  ``config_sentence_transformers.json`` (saved by sentence-transformers 5+) is one Transformer
  module with ``"transformer_task": "sequence-classification"``; its
  ``sentence_bert_config.json`` may set ``max_seq_length`` and ``do_lower_case``, and
  ``config_sentence_transformers.json`` records the activation and prompts.
* Any other folder is a plain transformers folder (``BAAI/bge-reranker-v2-m3``,
  ``cross-encoder/ms-marco-MiniLM-L6-v2``): the activation may be recorded in ``config.json``
  under ``sentence_transformers.activation_fn`` (version 4) or
  ``sbert_ce_default_activation_function`` (older).
* With no activation recorded: Sigmoid for one label, else none (raw logits), as
  sentence-transformers defaults. A recorded activation is looked up in the fixed table
  :data:`ACTIVATION_PATHS`.

Example:
    >>> import tempfile
    >>> from conan_rag.testing import build_cross_encoder
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), layout="xlmr", n_cjk=100)
    >>> spec = read_cross_encoder_spec(folder)
    >>> spec.architecture, spec.num_labels, spec.activation
    ('XLMRobertaForSequenceClassification', 1, 'sigmoid')
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conan_rag.errors import ConanModelError
from conan_rag.model.files import WEIGHT_FILES, download_hint, weight_file

logger = logging.getLogger(__name__)

# The activations a CrossEncoder folder may record, by the class path sentence-transformers
# writes. A fixed table: a config never makes us import code.
ACTIVATION_PATHS: dict[str, str] = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.SiLU": "silu",
}
SEQUENCE_CLASSIFICATION = "ForSequenceClassification"


@dataclass(frozen=True)
class CrossEncoderSpec:
    """Everything read from a CrossEncoder folder, before any weights are loaded.

    Attributes:
        path: the model folder.
        model_path: the folder holding the transformer's weights and tokenizer (``path``, or
            the Transformer module's sub-folder named in ``modules.json``).
        architecture: the ``*ForSequenceClassification`` class ``config.json`` names.
        num_labels: outputs of the classification head.
        activation: applied to the logits (a value of :data:`ACTIVATION_PATHS`).
        max_seq_length: the folder's own limit in tokens (``sentence_bert_config.json``);
            ``None``: the tokenizer's ``model_max_length``, capped by the position embeddings.
        max_position_embeddings: from ``config.json`` (``None`` when absent).
        do_lower_case: lower-case texts before tokenizing.
        prompt: prepended to every query (the folder's default prompt; ``""``: none).
    """

    path: Path
    model_path: Path
    architecture: str
    num_labels: int
    activation: str
    max_seq_length: int | None = None
    max_position_embeddings: int | None = None
    do_lower_case: bool = False
    prompt: str = ""


def _read_json(path: Path, *, required: bool = True) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not required:
            return None
        raise ConanModelError(
            f"Missing file {path}. {download_hint(path.parent.name)}", path=path
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConanModelError(f"Corrupt JSON in {path}: {exc}. Re-download the model.") from None


def _num_labels(config: dict[str, Any]) -> int:
    """Labels, by transformers' rule: ``len(id2label)``, else ``num_labels``, else 2."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    value = config.get("num_labels")
    return int(value) if isinstance(value, int) and value > 0 else 2


def _activation(path: Any, source: Path) -> str | None:
    """The table name of a recorded activation; None where sentence-transformers ignores it."""
    if not isinstance(path, str) or not path:
        return None
    if path in ACTIVATION_PATHS:
        return ACTIVATION_PATHS[path]
    if not path.startswith("torch."):
        # sentence-transformers ignores it without trust_remote_code, and so do we.
        logger.warning("%s names activation %r; using the default instead", source, path)
        return None
    raise ConanModelError(
        f"{source} names activation {path!r}; conan-rag applies only {sorted(ACTIVATION_PATHS)} "
        "(it never imports code a config names)."
    )


def _choose_activation(
    folder: Path, model_path: Path, st_config: dict[str, Any], config: dict[str, Any]
) -> str | None:
    """The recorded activation, looked for where sentence-transformers looks, in its order."""
    recorded = _activation(
        st_config.get("activation_fn"), folder / "config_sentence_transformers.json"
    )
    if recorded is not None:
        return recorded
    st_key = config.get("sentence_transformers")
    if isinstance(st_key, dict) and "activation_fn" in st_key:
        return _activation(st_key["activation_fn"], model_path / "config.json")
    return _activation(config.get("sbert_ce_default_activation_function"), model_path)


def _st_modules(folder: Path) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """The Transformer module's folder and configs, for a CrossEncoder saved by ST 5+.

    Returns:
        The module's folder, its ``sentence_bert_config.json`` and the folder's
        ``config_sentence_transformers.json``; ``None`` for any other folder.
    """
    if not (folder / "modules.json").is_file():
        return None
    st_config = _read_json(folder / "config_sentence_transformers.json", required=False)
    if not isinstance(st_config, dict) or st_config.get("model_type") != "CrossEncoder":
        return None  # sentence-transformers loads it as a plain transformers folder
    modules = _read_json(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    if kinds != ["Transformer"]:
        raise ConanModelError(
            f"{folder / 'modules.json'} lists modules {kinds}; conan-rag runs CrossEncoders made "
            "of one Transformer module (a *ForSequenceClassification model).",
            path=folder,
        )
    module_path = folder / str(modules[0].get("path", ""))
    module_config = _read_json(module_path / "sentence_bert_config.json", required=False) or {}
    task = module_config.get("transformer_task", "feature-extraction")
    if task != "sequence-classification":
        raise ConanModelError(
            f"{module_path / 'sentence_bert_config.json'} sets transformer_task {task!r}; a "
            "CrossEncoder that conan-rag runs has 'sequence-classification'.",
            path=module_path,
        )
    return module_path, module_config, st_config


def read_cross_encoder_spec(folder: Path) -> CrossEncoderSpec:
    """Read a resolved CrossEncoder folder (see :func:`~conan_rag.model.files.resolve_model`).

    Raises:
        ConanModelError: a file is missing or corrupt, the folder holds no
            ``*ForSequenceClassification`` model (an embedding model, an LLM reranker), asks for
            custom code, or records an activation outside :data:`ACTIVATION_PATHS`.
    """
    modules = _st_modules(folder)
    model_path, module_config, st_config = modules or (folder, {}, {})
    config = _read_json(model_path / "config.json")
    if not isinstance(config, dict):
        raise ConanModelError(f"{model_path / 'config.json'} should hold a JSON object.")
    if config.get("auto_map"):
        raise ConanModelError(
            f"{model_path / 'config.json'} asks for custom model code (auto_map); conan-rag never "
            "runs code shipped in a model folder. Use a model with a built-in architecture."
        )
    architectures = config.get("architectures") or []
    architecture = str(architectures[0]) if architectures else ""
    if not architecture.endswith(SEQUENCE_CLASSIFICATION):
        kind = "an LLM reranker" if architecture.endswith("ForCausalLM") else "not a cross-encoder"
        raise ConanModelError(
            f"{model_path} holds {architecture or 'no architecture'} ({kind}); a reranker folder "
            f"holds a *{SEQUENCE_CLASSIFICATION} model, e.g. BAAI/bge-reranker-v2-m3 or "
            "cross-encoder/ms-marco-MiniLM-L6-v2.",
            path=model_path,
        )
    if weight_file(model_path) is None:
        raise ConanModelError(
            f"{model_path} has neither {' nor '.join(WEIGHT_FILES)}: the model's weights are "
            f"missing. {download_hint(folder.name)}",
            path=model_path,
        )
    num_labels = _num_labels(config)
    activation = _choose_activation(folder, model_path, st_config, config)
    processor_kwargs = module_config.get("processor_kwargs") or module_config.get(
        "tokenizer_args", {}
    )
    limit = processor_kwargs.get("model_max_length") or module_config.get("max_seq_length")
    positions = config.get("max_position_embeddings")
    prompts = st_config.get("prompts") or {}
    default_prompt = st_config.get("default_prompt_name")
    return CrossEncoderSpec(
        path=folder,
        model_path=model_path,
        architecture=architecture,
        num_labels=num_labels,
        activation=activation or ("sigmoid" if num_labels == 1 else "identity"),
        max_seq_length=int(limit) if limit else None,
        max_position_embeddings=int(positions) if isinstance(positions, int) else None,
        do_lower_case=bool(module_config.get("do_lower_case", False)),
        prompt=str(prompts.get(default_prompt) or "") if default_prompt else "",
    )
