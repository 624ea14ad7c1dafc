"""Build random-weight sentence-transformers ``CrossEncoder`` folders (BERT or XLM-R layout).

Example:
    >>> import tempfile
    >>> folder = build_cross_encoder(tempfile.mkdtemp(), n_cjk=10)
    >>> (folder / "config.json").is_file()
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from conan_rag.testing.files import save_weights, write_json
from conan_rag.testing.vocab import chinese_vocab, xlmr_vocab

__all__ = ["build_cross_encoder"]

# The activation sentence-transformers records for a CrossEncoder it saves (its default).
_SIGMOID = "torch.nn.modules.activation.Sigmoid"
_IDENTITY = "torch.nn.modules.linear.Identity"


def build_cross_encoder(
    folder: str | Path,
    *,
    layout: Literal["bert", "xlmr"] = "bert",
    num_labels: int = 1,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    max_length: int = 128,
    n_cjk: int = 20992,
    st_config: Literal["modules", "config", "none"] = "modules",
    activation_fn: str | None = None,
    weights: Literal["safetensors", "bin", "both"] = "safetensors",
    seed: int = 0,
) -> Path:
    """Write a random-weight sentence-transformers ``CrossEncoder`` folder with a real layout.

    ``"bert"`` is ``BertForSequenceClassification`` with a WordPiece tokenizer (as
    ``cross-encoder/ms-marco-MiniLM-L6-v2``); ``"xlmr"`` is
    ``XLMRobertaForSequenceClassification`` with a sentencepiece-style Unigram tokenizer (as
    ``BAAI/bge-reranker-v2-m3``): ``<s> A </s></s> B </s>`` pairs and no segment ids.

    Args:
        folder: where to write (created if missing).
        layout: ``"bert"`` or ``"xlmr"``.
        num_labels: outputs of the classifier head (rerankers: 1).
        hidden_size: hidden size of the transformer.
        num_layers: transformer layers.
        num_heads: attention heads.
        max_length: the tokenizer's ``model_max_length`` (pairs are truncated to it).
        n_cjk: CJK characters in the vocab (the first ones of the basic block).
        st_config: how the folder tells sentence-transformers it is a CrossEncoder:
            ``"modules"`` as sentence-transformers 5+ saves one (``modules.json``,
            ``sentence_bert_config.json``, ``config_sentence_transformers.json``);
            ``"config"`` as version 4 did (a ``sentence_transformers`` key in ``config.json``);
            ``"none"``: a plain transformers folder.
        activation_fn: the activation's class path to record (default: what
            sentence-transformers records, Sigmoid for one label, else Identity); not recorded
            with ``st_config="none"``.
        weights: ``model.safetensors``, ``pytorch_model.bin`` or both.
        seed: random seed for the weights.

    Returns:
        The folder.

    Example:
        >>> import tempfile
        >>> folder = build_cross_encoder(tempfile.mkdtemp(), layout="xlmr", n_cjk=100)
        >>> sorted(p.name for p in folder.iterdir())[:3]
        ['config.json', 'config_sentence_transformers.json', 'model.safetensors']
    """
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaTokenizer,
    )

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    activation = activation_fn or (_SIGMOID if num_labels == 1 else _IDENTITY)
    shape: dict[str, Any] = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": 2 * hidden_size,
        "num_labels": num_labels,
    }
    if st_config == "config":
        shape["sentence_transformers"] = {"activation_fn": activation, "version": "4.1.0"}
    config: BertConfig | XLMRobertaConfig
    tokenizer: Any
    if layout == "bert":
        vocab = chinese_vocab(n_cjk)
        (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = BertTokenizer(vocab=str(root / "vocab.txt"), do_lower_case=True)
        config = BertConfig(vocab_size=len(vocab), type_vocab_size=2, **shape)
        model_class: type = BertForSequenceClassification
    else:
        pieces = xlmr_vocab(n_cjk)
        tokenizer = XLMRobertaTokenizer(vocab=pieces)
        config = XLMRobertaConfig(
            vocab_size=len(pieces),
            type_vocab_size=1,
            max_position_embeddings=max_length + 2,  # positions start after the padding index
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **shape,
        )
        model_class = XLMRobertaForSequenceClassification
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(str(root))
    config.architectures = [model_class.__name__]
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():  # the default init is tiny; widen it so pairs score measurably apart
        for name, param in model.named_parameters():
            if param.dim() > 1:
                head = name.startswith(("classifier.", "bert.pooler."))
                param.normal_(0.0, 0.3 if head else 0.15)
    config.save_pretrained(str(root))
    save_weights(model, root, weights)
    if st_config == "modules":
        module = "sentence_transformers.base.modules.transformer.Transformer"
        write_json(root / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": module}])
        write_json(
            root / "sentence_bert_config.json",
            {
                "transformer_task": "sequence-classification",
                "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                "module_output_name": "scores",
            },
        )
        write_json(
            root / "config_sentence_transformers.json",
            {
                "activation_fn": activation,
                "default_prompt_name": None,
                "model_type": "CrossEncoder",
                "prompts": {},
            },
        )
    return root
