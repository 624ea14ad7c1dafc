"""One process-wide registry of loaded models, keyed by model kind.

A kind (``"embedding"``, ``"cross-encoder"``) loads its weights once per resolved folder,
revision, device, dtype (and what else changes the loaded runner) into a runner with a batching
queue; every view of those weights (an :class:`~conan_rag.encoder.Encoder`, a
:class:`~conan_rag.reranking.reranker.Reranker`) that differs only in settings shares them.
:func:`~conan_rag.registry.load_encoder` and :func:`~conan_rag.reranking.load_reranker` go
through :data:`MODELS`: one lock, fresh in a forked child, and one pickling rule (a view
pickles by its settings, and unpickles as the receiving process's shared view).

Example:
    >>> from conan_rag import load_encoder
    >>> enc = load_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> MODELS.loaded("embedding") >= 1
    True
    >>> import pickle  # by its settings, never its weights: back as this process's shared one
    >>> pickle.loads(pickle.dumps(enc)) is enc
    True
"""

from __future__ import annotations

import copyreg
import importlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from conan_rag.batching.queue import BatchQueue
from conan_rag.config import ModelConfig, default_token_budget
from conan_rag.forking import after_fork_in_child
from conan_rag.model.files import canonical_model_id
from conan_rag.runtime.devices import resolve_device, resolve_dtype

__all__ = ["MODELS", "ModelKind", "ModelRegistry", "Resolved", "resolve_config"]

ModelKind = Literal["embedding", "cross-encoder"]
# The module whose import registers each kind (a pickled view may arrive before it is loaded).
_KIND_MODULES: dict[str, str] = {
    "embedding": "conan_rag.registry",
    "cross-encoder": "conan_rag.reranking.registry",
}
_C = TypeVar("_C", bound=ModelConfig)
_V = TypeVar("_V")


@dataclass(frozen=True)
class Resolved(Generic[_C]):
    """A config with its folder, device and dtype resolved (see :func:`resolve_config`).

    Attributes:
        config: the settings, ``model`` the folder's canonical id.
        folder: the model folder.
        device: the resolved device (``"cpu"``, ``"cuda:0"``, ...).
        dtype: the resolved dtype name.
    """

    config: _C
    folder: Path
    device: str
    dtype: str

    def view_key(self, runner_key: tuple[Any, ...]) -> tuple[Any, ...]:
        """The key of one view: its runner's, and every setting but model, device and dtype."""
        rest = self.config.replace(model="", device="", dtype="").to_dict()
        return (*runner_key, *sorted(rest.items()))


def resolve_config(
    base: _C,
    explicit: bool,
    model: str | Path | None,
    device: str,
    dtype: str,
    settings: dict[str, Any],
    resolve: Callable[[str, str | None], Path],
) -> Resolved[_C]:
    """Merge a loader's arguments into ``base`` and resolve its folder, device and dtype.

    Args:
        base: the config passed (or the kind's default).
        explicit: whether a config was passed: then ``"auto"`` device/dtype keep its own.
        model: overrides ``base.model`` unless ``None``.
        device: the loader's ``device`` argument.
        dtype: the loader's ``dtype`` argument.
        settings: other fields to override.
        resolve: finds the model folder for ``(model, revision)``.

    Returns:
        The resolved config (``model``: the folder's canonical id, one spelling per model).
    """
    changes: dict[str, Any] = dict(settings)
    if model is not None:
        changes["model"] = str(model)
    if not explicit or device != "auto":
        changes["device"] = device
    if not explicit or dtype != "auto":
        changes["dtype"] = dtype
    cfg = base.replace(**changes)
    folder = resolve(cfg.model, cfg.revision)
    resolved_device = resolve_device(cfg.device)
    resolved_dtype = resolve_dtype(cfg.dtype, resolved_device)
    cfg = cfg.replace(model=canonical_model_id(folder))
    return Resolved(cfg, folder, resolved_device, resolved_dtype)


def _restore(kind: str, config: dict[str, Any]) -> Any:
    """Unpickle a view: this process's shared one for ``config``."""
    importlib.import_module(_KIND_MODULES[kind])
    return MODELS.restore(kind, config)


class ModelRegistry:
    """Loaded runners (with their queues) and their views, by model kind. Thread-safe.

    Each kind registers once (:meth:`register`) how to rebuild a view from its settings.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._runners: dict[tuple[str, Hashable], tuple[Any, BatchQueue[Any]]] = {}
        self._views: dict[tuple[str, Hashable], Any] = {}
        self._loaders: dict[str, tuple[type[ModelConfig], Callable[..., Any]]] = {}
        after_fork_in_child(self._new_lock_after_fork)

    def _new_lock_after_fork(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held it, e.g. loading)."""
        self.lock = threading.Lock()

    def register(
        self,
        kind: ModelKind,
        view_class: type[Any],
        config_class: type[ModelConfig],
        load: Callable[..., Any],
    ) -> None:
        """Pickle ``view_class`` objects by their config; ``load(config=...)`` rebuilds one."""
        self._loaders[kind] = (config_class, load)

        def reduce(view: Any) -> tuple[Any, ...]:
            return (_restore, (kind, view.config.to_dict()))

        copyreg.pickle(view_class, reduce)

    def restore(self, kind: str, config: dict[str, Any]) -> Any:
        """The shared view of ``kind`` for a pickled config."""
        config_class, load = self._loaders[kind]
        return load(config=config_class.from_dict(config))

    def get(
        self,
        kind: ModelKind,
        runner_key: tuple[Any, ...],
        view_key: tuple[Any, ...],
        load_runner: Callable[[], Any],
        make_view: Callable[[Any, BatchQueue[Any]], _V],
        device: str,
    ) -> _V:
        """The shared view for ``view_key``, loading its runner (once per ``runner_key``).

        Args:
            kind: the model kind.
            runner_key: what identifies the loaded weights.
            view_key: what identifies the view (its runner key and settings).
            load_runner: loads the weights (called under the lock, at most once per key).
            make_view: builds a view of a runner and its queue.
            device: the resolved device (for the queue's default token budget).
        """
        with self.lock:
            view = self._views.get((kind, view_key))
            if view is not None:
                return view  # type: ignore[no-any-return]
            shared = self._runners.get((kind, runner_key))
            if shared is None:
                runner = load_runner()
                shared = (runner, BatchQueue(runner, default_token_budget(device)))
                self._runners[(kind, runner_key)] = shared
            view = make_view(*shared)
            self._views[(kind, view_key)] = view
            return view

    def loaded(self, kind: ModelKind) -> int:
        """How many distinct sets of weights of ``kind`` this process has loaded."""
        with self.lock:
            return sum(1 for k, _ in self._runners if k == kind)

    def clear(self, kind: ModelKind) -> None:
        """Forget every shared view of ``kind`` (freed once no caller holds them)."""
        with self.lock:
            for table in (self._views, self._runners):
                for key in [key for key in table if key[0] == kind]:
                    del table[key]


MODELS = ModelRegistry()
