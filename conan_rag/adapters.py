"""Deprecated: import from :mod:`conan_rag.adapter_kit` (this alias goes in the next release).

Example:
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     from conan_rag.adapters import translate_options
    >>> translate_options({"model_name": "m"})
    {'model': 'm'}
"""

from __future__ import annotations

import warnings

from conan_rag import adapter_kit
from conan_rag.adapter_kit import *  # noqa: F403 - the whole public surface, under the old name

__all__ = list(adapter_kit.__all__)

warnings.warn(
    "conan_rag.adapters is now conan_rag.adapter_kit; import from there "
    "(conan_rag.adapters goes in the next release).",
    DeprecationWarning,
    stacklevel=2,
)
