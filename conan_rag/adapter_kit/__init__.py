"""What the conan-rag adapters (LangChain, LlamaIndex, Chroma) are built from.

Every adapter takes the same option names for the same things (:data:`VOCABULARY`), also
accepts its ecosystem's customary names (:data:`ECOSYSTEM_NAMES`: ``model_name``,
``query_instruction``, ``normalize_embeddings``, ...) and translates the kwargs dicts of
sentence-transformers based adapters (:func:`translate_options`). :class:`SharedEncoderMixin`
and :class:`SharedRerankerMixin` give the pydantic adapters one object behaviour: settings
that rebind the shared model when they change, and copies and pickles that carry settings,
never weights; :func:`open_encoder` opens the shared encoder (or a server's) for settings.

Modules: :mod:`~conan_rag.adapter_kit.vocabulary` (the option names),
:mod:`~conan_rag.adapter_kit.translation` (keyword arguments -> options) and
:mod:`~conan_rag.adapter_kit.binding` (holding the model).

Example:
    >>> from conan_rag.adapter_kit import translate_options
    >>> translate_options({"model_name": "m", "model_kwargs": {"device": "cpu"}})
    {'model': 'm', 'device': 'cpu'}
"""

from __future__ import annotations

from conan_rag.adapter_kit.binding import (
    RebindingMixin,
    SharedEncoderMixin,
    SharedRerankerMixin,
    open_encoder,
)
from conan_rag.adapter_kit.translation import model_alias, translate_options, with_positional_model
from conan_rag.adapter_kit.vocabulary import (
    ECOSYSTEM_NAMES,
    ENCODER_OPTIONS,
    KWARG_DICTS,
    REMOTE_OPTIONS,
    SERVER_DECIDES,
    VOCABULARY,
)

__all__ = [
    "ECOSYSTEM_NAMES",
    "ENCODER_OPTIONS",
    "KWARG_DICTS",
    "REMOTE_OPTIONS",
    "SERVER_DECIDES",
    "VOCABULARY",
    "RebindingMixin",
    "SharedEncoderMixin",
    "SharedRerankerMixin",
    "model_alias",
    "open_encoder",
    "translate_options",
    "with_positional_model",
]
