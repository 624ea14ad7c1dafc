"""Build random-weight models with Conan-embedding-v1's exact folder layout.

Conan-embedding-v1 is a BERT at the folder root, ``1_Pooling/`` (cls), ``2_Dense/`` expanding
hidden x 1.75 (1024 -> 1792, bias, identity activation, weights in both ``model.safetensors`` and
``pytorch_model.bin``), ``sentence_bert_config.json`` with ``max_seq_length`` 512, and no
Normalize module. Tests and benchmarks build small (or full-size) copies of that layout with
random weights, since the real weights cannot be downloaded here.

Example:
    >>> import tempfile
    >>> folder = build_conan_layout_model(tempfile.mkdtemp(), hidden_size=32, num_layers=1)
    >>> sorted(p.name for p in folder.iterdir())[:4]
    ['1_Pooling', '2_Dense', 'config.json', 'config_sentence_transformers.json']
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Literal

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def chinese_vocab(n_cjk: int = 20992) -> list[str]:
    """A BERT-Chinese-style vocab: specials, ASCII, punctuation, the first ``n_cjk`` CJK chars."""
    ascii_tokens = list(string.ascii_lowercase + string.digits + string.punctuation)
    cjk_punct = list("。！？；，、：“”‘’（）《》【】…—")
    cjk = [chr(0x4E00 + i) for i in range(n_cjk)]
    words = ["the", "of", "and", "to", "in", "is", "cat", "dog", "protein", "cell", "gene"]
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    seen: dict[str, None] = {}
    for token in SPECIAL_TOKENS + ascii_tokens + cjk_punct + cjk + words + pieces:
        seen.setdefault(token, None)
    return list(seen)


def build_conan_layout_model(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    pooling: Literal["cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken"] = "cls",
    weights: Literal["safetensors", "bin", "both"] = "both",
    max_seq_length: int = 512,
    n_cjk: int = 20992,
    prompts: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight sentence-transformers folder with Conan-embedding-v1's layout.

    Args:
        folder: where to write (created if missing).
        hidden_size: BERT hidden size; the Dense layer maps it to ``hidden_size * 7 // 4``.
        num_layers: transformer layers (Conan: 24).
        num_heads: attention heads (Conan: 16).
        intermediate_size: feed-forward size (default ``4 * hidden_size``).
        pooling: the Pooling mode to record (Conan: ``"cls"``).
        weights: which weight formats to write for the transformer and the Dense layer.
        max_seq_length: ``sentence_bert_config.json``'s limit (Conan: 512).
        n_cjk: CJK characters in the vocab (default: the whole basic CJK block, as in
            BERT-Chinese's 21,128-token vocab that Conan uses).
        prompts: ``config_sentence_transformers.json`` prompts (Conan: none).
        seed: random seed for the weights.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizer

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    vocab = chinese_vocab(n_cjk)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(
        vocab=str(root / "vocab.txt"), do_lower_case=True, tokenize_chinese_chars=True
    )
    tokenizer.model_max_length = max_seq_length
    tokenizer.save_pretrained(str(root))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max(512, max_seq_length),
        type_vocab_size=2,
    )
    model = BertModel(config).eval()
    with torch.no_grad():  # BERT's init is tiny; widen it so tokens differ measurably
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.08)
    if weights in ("safetensors", "both"):
        model.save_pretrained(str(root), safe_serialization=True)
    if weights in ("bin", "both"):
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, root / "pytorch_model.bin")
        if weights == "bin":
            config.save_pretrained(str(root))
    dense_out = hidden_size * 7 // 4
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    _write_json(root / "modules.json", modules)
    _write_json(
        root / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )
    _write_json(
        root / "config_sentence_transformers.json",
        {"prompts": prompts or {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    pooling_dir = root / "1_Pooling"
    pooling_dir.mkdir(exist_ok=True)
    flags = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
        "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
        "weightedmean": "pooling_mode_weightedmean_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }
    _write_json(
        pooling_dir / "config.json",
        {
            "word_embedding_dimension": hidden_size,
            **{f: f == flags[pooling] for f in flags.values()},
        },
    )
    dense_dir = root / "2_Dense"
    dense_dir.mkdir(exist_ok=True)
    _write_json(
        dense_dir / "config.json",
        {
            "in_features": hidden_size,
            "out_features": dense_out,
            "bias": True,
            "activation_function": "torch.nn.modules.linear.Identity",
        },
    )
    linear = torch.nn.Linear(hidden_size, dense_out)
    torch.nn.init.normal_(linear.weight, 0.0, 0.1)
    dense_state = {"linear.weight": linear.weight.detach(), "linear.bias": linear.bias.detach()}
    if weights in ("safetensors", "both"):
        save_file(
            {k: v.contiguous() for k, v in dense_state.items()},
            str(dense_dir / "model.safetensors"),
        )
    if weights in ("bin", "both"):
        torch.save(dense_state, dense_dir / "pytorch_model.bin")
    return root


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# The activation sentence-transformers records for a CrossEncoder it saves (its default).
_SIGMOID = "torch.nn.modules.activation.Sigmoid"
_IDENTITY = "torch.nn.modules.linear.Identity"
_WORDS = "the of and to in is was for on that with as by at from it cat dog protein cell gene"


def xlmr_vocab(n_cjk: int = 20992) -> list[tuple[str, float]]:
    """A small XLM-R-style Unigram vocab: ``<s> <pad> </s> <unk>``, pieces with scores, ``<mask>``.

    Whole English words (``▁the``) and a few Chinese words outscore their characters, so the
    Unigram model prefers them, as sentencepiece vocabularies do.

    Example:
        >>> vocab = xlmr_vocab(n_cjk=10)
        >>> [piece for piece, _ in vocab[:4]], vocab[-1][0]
        (['<s>', '<pad>', '</s>', '<unk>'], '<mask>')
    """
    pieces: dict[str, float] = {"▁": -4.0}
    for word in _WORDS.split():
        pieces["▁" + word] = -6.0
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -10.0)
        pieces.setdefault("▁" + char, -11.0)
    for char in "。！？；，、：“”‘’（）《》【】…—":
        pieces.setdefault(char, -9.0)
    for i in range(n_cjk):
        pieces.setdefault(chr(0x4E00 + i), -9.0)
    for word in ("中国", "长城", "细胞", "蛋白质", "基因", "世界"):
        pieces.setdefault(word, -12.0)
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return [*specials, *pieces.items(), ("<mask>", 0.0)]


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
    if weights in ("safetensors", "both"):
        model.save_pretrained(str(root), safe_serialization=True)
    if weights in ("bin", "both"):
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, root / "pytorch_model.bin")
    if st_config == "modules":
        module = "sentence_transformers.base.modules.transformer.Transformer"
        _write_json(root / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": module}])
        _write_json(
            root / "sentence_bert_config.json",
            {
                "transformer_task": "sequence-classification",
                "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                "module_output_name": "scores",
            },
        )
        _write_json(
            root / "config_sentence_transformers.json",
            {
                "activation_fn": activation,
                "default_prompt_name": None,
                "model_type": "CrossEncoder",
                "prompts": {},
            },
        )
    return root
