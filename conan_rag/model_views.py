"""Views of shared models: what an Encoder and a Reranker (and a RemoteEncoder) share.

A view holds settings over weights loaded once per process (see :mod:`conan_rag.model_registry`), so
copying one gives the view itself. Importing this module is light (no torch).

Example:
    >>> import copy
    >>> thing = Shared()
    >>> copy.deepcopy(thing) is thing
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conan_rag.config import ModelConfig, default_token_budget
from conan_rag.errors import ConanConfigError

if TYPE_CHECKING:
    from conan_rag.batching.queue import BatchQueue
    from conan_rag.runtime.runner import ModelRunner

__all__ = ["ModelView", "Shared"]

_S = TypeVar("_S", bound="Shared")
_R = TypeVar("_R", bound="ModelRunner")
_C = TypeVar("_C", bound=ModelConfig)


class Shared:
    """An object shared by every caller in a process: ``copy``/``deepcopy`` return it."""

    def __copy__(self: _S) -> _S:
        return self

    def __deepcopy__(self: _S, memo: dict[int, Any]) -> _S:
        return self


class ModelView(Shared, Generic[_R, _C]):
    """Settings over a loaded runner and its batching queue, both shared with other views.

    Args:
        config: the settings (``model`` is the canonical id of the loaded folder).
        runner: the loaded model, possibly shared with other views.
        queue: the batching queue of ``runner`` (shared likewise).
    """

    def __init__(self, config: _C, runner: _R, queue: BatchQueue[Any]) -> None:
        self.config = config
        self.runner = runner
        self.queue = queue
        self.model_id: str = config.model  # as loaded: hub id, or absolute folder
        self.token_budget: int = config.token_budget or default_token_budget(str(runner.device))

    @property
    def device(self) -> str:
        """The device the model runs on, e.g. ``"cpu"`` or ``"cuda"``."""
        return str(self.runner.device)

    @property
    def dtype(self) -> str:
        """The dtype the model computes in: ``float32``, ``bfloat16`` or ``float16``."""
        return self.runner.dtype_name

    @staticmethod
    def _check_at_most(setting: str, value: int | None, limit: int, what: str) -> None:
        """Raise if ``value`` (None: the model's own) exceeds the model's ``limit``."""
        if value and value > limit:
            raise ConanConfigError(
                f"{setting} {value} exceeds the model's {what} {limit}; pass a value <= "
                f"{limit} or None.",
                setting=setting,
                value=value,
            )
