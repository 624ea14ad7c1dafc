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

from pathlib import Path
from typing import Literal

import torch

from conan_rag.testing.files import save_weights, write_json
from conan_rag.testing.vocab import chinese_vocab

__all__ = ["build_conan_layout_model"]


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
    save_weights(model, root, weights)
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
    write_json(root / "modules.json", modules)
    write_json(
        root / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )
    write_json(
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
    write_json(
        pooling_dir / "config.json",
        {
            "word_embedding_dimension": hidden_size,
            **{f: f == flags[pooling] for f in flags.values()},
        },
    )
    dense_dir = root / "2_Dense"
    dense_dir.mkdir(exist_ok=True)
    write_json(
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
