"""The stages after the transformer: Pooling, Dense and Normalize, as small torch modules.

Each stage is built from a :class:`~conan_rag.model.spec.ModelSpec` part and computes in
float32 whatever dtype the transformer ran in, so bf16/fp16 transformers still pool and project
exactly.

Example:
    >>> import torch
    >>> from conan_rag.model.spec import PoolingSpec
    >>> pool = Pooling(PoolingSpec("mean", 4))
    >>> tokens = torch.ones(1, 3, 4)
    >>> pool(tokens, torch.tensor([[1, 1, 0]])).shape
    torch.Size([1, 4])
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from conan_rag.errors import ConanModelError
from conan_rag.model.files import PYTORCH_BIN, weight_file
from conan_rag.model.spec import ACTIVATIONS, DenseSpec, ModelSpec, PoolingSpec


class Pooling(nn.Module):
    """Reduce token vectors ``(batch, seq, hidden)`` to sentence vectors ``(batch, hidden)``.

    Matches sentence-transformers' ``Pooling`` for right-padded batches.
    """

    def __init__(self, spec: PoolingSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, prompt_length: int = 0
    ) -> torch.Tensor:
        """Pool ``tokens`` where ``mask`` is 1; skip the first ``prompt_length`` tokens if asked."""
        tokens = tokens.float()
        full_mask = mask
        if prompt_length and not self.spec.include_prompt:
            mask = mask.clone()
            mask[:, :prompt_length] = 0
        mode = self.spec.mode
        if mode == "cls":
            first = mask.to(torch.int32).argmax(dim=1)
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), first]
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        if mode == "max":
            return tokens.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        if mode in ("mean", "mean_sqrt_len"):
            total = (tokens * weights).sum(dim=1)
            count = weights.sum(dim=1).clamp(min=1e-9)
            return total / (count if mode == "mean" else count.sqrt())
        if mode == "weightedmean":
            positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
            pad_lengths = full_mask.to(torch.int32).argmax(dim=1)  # 0 for right padding
            position_weights = (positions.view(1, -1) - pad_lengths.view(-1, 1)).to(tokens.dtype)
            weights = weights * position_weights.unsqueeze(-1)
            return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        # lasttoken: the last position whose mask is 1
        seq_len = mask.shape[1]
        values, flipped = mask.flip(1).max(dim=1)
        flipped = torch.where(values == 0, seq_len - 1, flipped)
        last = seq_len - flipped - 1
        picked = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        return picked * values.unsqueeze(-1).to(tokens.dtype)


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    """Read a module's weights: safetensors first, ``.bin`` only as plain tensors."""
    path = weight_file(folder)
    if path is None:
        raise ConanModelError(f"{folder} holds no weight file; re-download the model.", path=folder)
    try:
        if path.name != PYTORCH_BIN:
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        raise ConanModelError(
            f"Cannot read weights {path}: {type(exc).__name__}: {exc}. The file is corrupt or "
            "not plain tensors (conan-rag loads .bin files only with weights_only=True); "
            "re-download the model.",
            path=path,
        ) from None
    if not isinstance(state, dict):
        raise ConanModelError(f"{path} does not hold a state dict.", path=path)
    return state


class Dense(nn.Module):
    """sentence-transformers' ``Dense``: ``activation(linear(x))``, weights from its folder."""

    def __init__(self, spec: DenseSpec) -> None:
        super().__init__()
        self.spec = spec
        self.linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.activation = ACTIVATIONS[spec.activation]()
        state = _load_state(spec.path)
        result = self.linear.load_state_dict(
            {k.removeprefix("linear."): v.float() for k, v in state.items()}, strict=False
        )
        if result.missing_keys or result.unexpected_keys:
            raise ConanModelError(
                f"Dense weights in {spec.path} do not fit a {spec.in_features}->"
                f"{spec.out_features} layer (bias={spec.bias}): missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project sentence vectors."""
        return self.activation(self.linear(x))


class Head(nn.Module):
    """Pooling, then every Dense layer, as one module (normalization is applied by the caller)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.pooling = Pooling(spec.pooling)
        self.dense = nn.ModuleList([Dense(layer) for layer in spec.dense])

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, prompt_length: int = 0
    ) -> torch.Tensor:
        """Token vectors to (un-normalized) sentence vectors, in float32."""
        out = self.pooling(tokens, mask, prompt_length)
        for layer in self.dense:
            out = layer(out)
        return out
