"""The check Chroma leaves out: reopening a conan-rag collection with other vector settings.

Chroma compares only the functions' names when a collection is opened; importing
:mod:`conan_rag.chroma` adds :func:`check_reopen` to ``get_collection``,
``get_collection_by_id`` and ``get_or_create_collection`` of Chroma's clients (sync and async).

Example:
    >>> from conan_rag.chroma import ConanEmbeddingFunction, check_reopen
    >>> ef = ConanEmbeddingFunction("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    >>> check_reopen(ef, {"name": "conan-rag", "config": ef.get_config()})  # same settings: fine
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from conan_rag.chroma.embedding_function import NAME, ConanEmbeddingFunction


def check_reopen(embedding_function: Any, persisted: dict[str, Any] | None) -> None:
    """Refuse opening a conan-rag collection with a function whose vector settings differ.

    Args:
        embedding_function: the function passed to ``get_collection``.
        persisted: the collection's stored ``{"name": ..., "config": ...}`` (or ``None``).

    Raises:
        ConanConfigError: see :meth:`ConanEmbeddingFunction.validate_config_update`.
    """
    if not isinstance(embedding_function, ConanEmbeddingFunction) or not persisted:
        return
    if persisted.get("name") != NAME or not isinstance(persisted.get("config"), dict):
        return
    embedding_function.validate_config_update(persisted["config"], embedding_function.get_config())


def _install_reopen_check() -> None:
    """Run :func:`check_reopen` after Chroma's own name check, once per client module."""
    for module_name in ("chromadb.api.client", "chromadb.api.async_client"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover - a Chroma without that client
            continue
        original = getattr(module, "validate_embedding_function_conflict_on_get", None)
        if original is None or getattr(original, "conan_rag_check", False):
            continue

        def checked(
            embedding_function: Any,
            persisted_ef_config: dict[str, Any] | None,
            _original: Callable[..., None] = original,
        ) -> None:
            _original(embedding_function, persisted_ef_config)
            check_reopen(embedding_function, persisted_ef_config)

        checked.conan_rag_check = True  # type: ignore[attr-defined]
        module.validate_embedding_function_conflict_on_get = checked  # type: ignore[attr-defined]


_install_reopen_check()
