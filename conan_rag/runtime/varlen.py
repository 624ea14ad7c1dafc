"""Unpadded (variable-length) forward pass for BERT-style encoders: no padding is computed.

A batch of token-id lists is packed into one ``(total_tokens, hidden)`` sequence with
``cu_seqlens`` (cumulative sequence starts, as flash-attention calls them). Embeddings, the
Q/K/V projections, the attention output projection, the feed-forward block and every LayerNorm
run on the packed tokens; only attention needs the sequence boundaries, and it gets them from:

1. ``flash_attn.flash_attn_varlen_func`` when flash-attn is installed (CUDA, bf16/fp16);
2. else torch's jagged nested tensors with ``scaled_dot_product_attention``;
3. else a padded SDPA over the attention step alone (any torch, any device).

The forward reads the weights of a loaded transformers ``BertModel`` through its own modules
(``embeddings``, ``encoder.layer[i].attention.self.query/key/value``,
``attention.output``, ``intermediate``, ``output``), so no weights are copied. Pooling then
runs on the packed tokens (``cls``) or on a padded view of them (every other mode), through the
backend's usual :class:`~conan_rag.model.modules.Head`.

:class:`~conan_rag.runtime.backend.Backend` uses it automatically on CUDA for
``model_type == "bert"``.

Example:
    >>> import torch
    >>> from conan_rag import load_encoder
    >>> backend = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu").backend
    >>> packed = pack([[101, 7592, 102], [101, 102]], torch.device("cpu"))
    >>> packed.cu_seqlens.tolist(), packed.max_len
    ([0, 3, 5], 3)
    >>> varlen_forward(backend.transformer, packed).shape
    torch.Size([5, 384])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from conan_rag.errors import ConanConfigError, ConanInputError

if TYPE_CHECKING:
    from conan_rag.model.modules import Head

Attention = Literal["auto", "flash", "nested", "padded"]
ATTENTIONS: tuple[str, ...] = ("auto", "flash", "nested", "padded")


@dataclass(frozen=True)
class Packed:
    """A batch of sequences laid end to end.

    Attributes:
        input_ids: ``(total,)`` token ids.
        position_ids: ``(total,)`` position of each token within its sequence.
        cu_seqlens: ``(batch + 1,)`` int32 sequence starts, last entry ``total``.
        offsets: ``cu_seqlens`` as int64 (what jagged nested tensors take).
        rows: ``(total,)`` the sequence each token belongs to.
        lengths: tokens per sequence.
        max_len: the longest sequence.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    offsets: torch.Tensor
    rows: torch.Tensor
    lengths: tuple[int, ...]
    max_len: int

    @property
    def total(self) -> int:
        """Tokens in the batch (no padding)."""
        return int(self.input_ids.shape[0])


def pack(ids: Sequence[Sequence[int]], device: torch.device) -> Packed:
    """Lay token-id lists end to end (pinned, non-blocking copies on CUDA).

    Example:
        >>> p = pack([[5, 6, 7], [8]], torch.device("cpu"))
        >>> p.input_ids.tolist(), p.position_ids.tolist(), p.rows.tolist()
        ([5, 6, 7, 8], [0, 1, 2, 0], [0, 0, 0, 1])
    """
    if not ids or any(len(x) == 0 for x in ids):
        raise ConanInputError("pack() needs at least one sequence and no empty sequence.")
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int64, count=total)
    rows = np.repeat(np.arange(len(ids), dtype=np.int64), lengths)
    positions = np.arange(total, dtype=np.int64) - offsets[:-1][rows]
    host = [torch.from_numpy(a) for a in (flat, positions, offsets.astype(np.int32), offsets, rows)]
    if device.type == "cuda":
        host = [t.pin_memory().to(device, non_blocking=True) for t in host]
    input_ids, position_ids, cu_seqlens, offsets_t, rows_t = host
    return Packed(
        input_ids=input_ids,
        position_ids=position_ids,
        cu_seqlens=cu_seqlens,
        offsets=offsets_t,
        rows=rows_t,
        lengths=tuple(int(n) for n in lengths),
        max_len=int(lengths.max()),
    )


def unpack(values: torch.Tensor, packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed ``(total, ...)`` values to right-padded ``(batch, max_len, ...)`` plus a mask.

    Example:
        >>> p = pack([[5, 6, 7], [8]], torch.device("cpu"))
        >>> padded, mask = unpack(torch.arange(4.0), p)
        >>> padded.tolist(), mask.tolist()
        ([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], [[1, 1, 1], [1, 0, 0]])
    """
    batch = len(packed.lengths)
    out = values.new_zeros((batch, packed.max_len, *values.shape[1:]))
    out[packed.rows, packed.position_ids] = values
    mask = torch.zeros((batch, packed.max_len), dtype=torch.long, device=values.device)
    mask[packed.rows, packed.position_ids] = 1
    return out, mask


def varlen_supported(model: Any) -> bool:
    """Whether :func:`varlen_forward` can run ``model`` (an encoder-only absolute-position BERT)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "bert":
        return False
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return False
    try:
        layer = model.encoder.layer[0]
        return all(
            hasattr(layer.attention.self, name) for name in ("query", "key", "value", "scaling")
        ) and hasattr(model, "embeddings")
    except (AttributeError, IndexError, TypeError):
        return False


def _flash_available(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def choose_attention(device: torch.device, dtype: torch.dtype, attention: str = "auto") -> str:
    """The attention kernel to use: ``"flash"``, ``"nested"`` or ``"padded"``.

    Raises:
        ValueError: ``attention`` is unknown, or ``"flash"`` was asked for where it cannot run.
    """
    if attention not in ATTENTIONS:
        raise ConanConfigError(
            f"Unknown attention {attention!r}; choose one of {list(ATTENTIONS)}."
        )
    if attention == "flash" and not _flash_available(device, dtype):
        raise ConanConfigError(
            "attention='flash' needs the flash-attn package, a CUDA device and bf16/fp16 "
            "(pip install flash-attn); use 'nested' or 'padded'."
        )
    if attention != "auto":
        return attention
    return "flash" if _flash_available(device, dtype) else "nested"


def _nested_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed, scale: float
) -> torch.Tensor:
    def jagged(x: torch.Tensor) -> torch.Tensor:  # (total, heads, dim) -> (batch, heads, j, dim)
        return torch.nested.nested_tensor_from_jagged(
            x, packed.offsets, min_seqlen=min(packed.lengths), max_seqlen=packed.max_len
        ).transpose(1, 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "nested tensors are a prototype" on some paths
        out = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v), scale=scale)
    return out.transpose(1, 2).values()


def _padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed, scale: float
) -> torch.Tensor:
    (qp, mask), (kp, _), (vp, _) = unpack(q, packed), unpack(k, packed), unpack(v, packed)
    keep = mask.bool()[:, None, None, :]  # (batch, 1, 1, keys)
    out = F.scaled_dot_product_attention(
        qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2), attn_mask=keep, scale=scale
    )
    return out.transpose(1, 2)[packed.rows, packed.position_ids]


def _flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed, scale: float
) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    out: torch.Tensor = flash_attn_varlen_func(
        q,
        k,
        v,
        packed.cu_seqlens,
        packed.cu_seqlens,
        packed.max_len,
        packed.max_len,
        dropout_p=0.0,
        softmax_scale=scale,
        causal=False,
    )
    return out


_ATTENTION_FNS = {
    "flash": _flash_attention,
    "nested": _nested_attention,
    "padded": _padded_attention,
}


@torch.inference_mode()
def varlen_forward(model: Any, packed: Packed, attention: Attention = "auto") -> torch.Tensor:
    """Last hidden states of a transformers ``BertModel`` for packed tokens: ``(total, hidden)``.

    Args:
        model: a loaded ``BertModel`` (eval mode); its modules and weights are used in place.
        packed: the batch from :func:`pack`, on the model's device.
        attention: the attention kernel (``"auto"``: flash-attn if installed, else nested).

    Returns:
        The same values as the padded forward's ``last_hidden_state`` at non-padding positions,
        in packed order, in the model's dtype.

    Example:
        >>> from conan_rag import load_encoder
        >>> bert = load_encoder("sentence-transformers/all-MiniLM-L6-v2").backend.transformer
        >>> p = pack([[101, 7592, 102]], torch.device("cpu"))
        >>> varlen_forward(bert, p, attention="padded").shape
        torch.Size([3, 384])
    """
    first = next(model.parameters())
    kind = choose_attention(first.device, first.dtype, attention)
    attend = _ATTENTION_FNS[kind]
    ids = packed.input_ids.unsqueeze(0)
    hidden = model.embeddings(
        input_ids=ids,
        token_type_ids=torch.zeros_like(ids),
        position_ids=packed.position_ids.unsqueeze(0),
    )[0]
    total = packed.total
    for layer in model.encoder.layer:
        self_attention = layer.attention.self
        heads, head_dim = self_attention.num_attention_heads, self_attention.attention_head_size
        q = self_attention.query(hidden).view(total, heads, head_dim)
        k = self_attention.key(hidden).view(total, heads, head_dim)
        v = self_attention.value(hidden).view(total, heads, head_dim)
        context = attend(q, k, v, packed, float(self_attention.scaling))
        hidden = layer.attention.output(context.reshape(total, heads * head_dim), hidden)
        hidden = layer.output(layer.intermediate(hidden), hidden)
    return hidden


@torch.inference_mode()
def embed_varlen(
    transformer: torch.nn.Module,
    head: Head,
    ids: Sequence[Sequence[int]],
    prompt_length: int = 0,
    attention: Attention = "auto",
) -> torch.Tensor:
    """A batch through :func:`varlen_forward` and the head: float32 vectors on the CPU.

    Same contract as :meth:`~conan_rag.runtime.backend.Backend.embed_ids`.
    """
    packed = pack(ids, next(transformer.parameters()).device)
    hidden = varlen_forward(transformer, packed, attention)
    pooling = head.pooling.spec
    if pooling.mode == "cls" and (prompt_length == 0 or pooling.include_prompt):
        firsts = hidden[packed.offsets[:-1]].unsqueeze(1)  # only the [CLS] rows
        mask = torch.ones(firsts.shape[:2], dtype=torch.long, device=firsts.device)
        vectors = head(firsts, mask, 0)
    else:
        tokens, mask = unpack(hidden, packed)
        vectors = head(tokens, mask, prompt_length)
    return vectors.float().cpu()
