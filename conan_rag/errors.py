"""One exception family for conan-rag: every error raised on purpose is a :class:`ConanRagError`.

Errors carry data (the model, the path, the setting, the valid choices) as attributes, and their
messages speak in library terms (argument names, not command-line flags). The ``conan-rag``
command turns them into advice about its own flags (:mod:`conan_rag.cli`).

Each class also derives from the built-in exception a caller would expect (``ValueError``,
``TypeError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps working.

Example:
    >>> from conan_rag.errors import ConanModelError, ConanRagError
    >>> issubclass(ConanModelError, ConanRagError) and issubclass(ConanModelError, ValueError)
    True
    >>> err = ConanConfigError("Unknown dtype 'fp8'.", setting="dtype", choices=("float32",))
    >>> err.setting, err.choices
    ('dtype', ('float32',))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class ConanRagError(Exception):
    """Base class of every error conan-rag raises on purpose."""


class ConanModelError(ConanRagError, ValueError):
    """A model cannot be found, or its folder is incomplete, corrupt or inconsistent.

    Attributes:
        model: the model id or folder asked for (when known).
        path: the file or folder at fault (when known).
    """

    def __init__(
        self, message: str, *, model: str | None = None, path: str | Path | None = None
    ) -> None:
        super().__init__(message)
        self.model = model
        self.path = Path(path) if path is not None else None


class ModelNotFoundError(ConanModelError, FileNotFoundError):
    """A model id is neither a local folder nor in the local Hugging Face cache.

    Attributes:
        model: the id asked for.
        revision: the hub revision asked for (``None``: the default branch).
    """

    def __init__(self, message: str, *, model: str, revision: str | None = None) -> None:
        super().__init__(message, model=model)
        self.revision = revision


class ConanConfigError(ConanRagError, ValueError):
    """A setting has a value that is not one of the valid choices.

    Attributes:
        setting: the name of the setting (argument or field), when one is at fault.
        value: the value given.
        choices: the valid values, when they can be listed.
    """

    def __init__(
        self,
        message: str,
        *,
        setting: str | None = None,
        value: Any = None,
        choices: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value
        self.choices = tuple(choices) if choices is not None else None


class ConanInputError(ConanRagError, ValueError):
    """An input (a query, a text, a list of paths) cannot be processed as given."""


class ConanTypeError(ConanRagError, TypeError):
    """An input has the wrong type (e.g. ``bytes`` where a ``str`` is expected).

    Attributes:
        index: the position of the offending item in its list, when there is one.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InputPathError(ConanInputError, FileNotFoundError):
    """Paths named as input do not exist; nothing was read, written or deleted.

    Attributes:
        paths: the missing paths, as given.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        listed = ", ".join(repr(p) for p in paths)
        super().__init__(
            f"No such file or folder: {listed}. Nothing was ingested or deleted; check the "
            "spelling of the path(s)."
        )
        self.paths = list(paths)


class LoaderError(ConanRagError):
    """A file could not be read as a document.

    Attributes:
        path: the file.
        reason: why, in a few words.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class StoreError(ConanRagError, OSError):
    """A vector store cannot be opened or written.

    Attributes:
        location: the store folder or server URL.
        problem: what is wrong, in a few words.
    """

    def __init__(self, message: str, *, location: str, problem: str) -> None:
        super().__init__(message)
        self.location = location
        self.problem = problem


class CollectionNotFoundError(ConanRagError, LookupError):
    """A collection that should exist does not.

    Attributes:
        collection: the name asked for.
        existing: the collections the store holds.
    """

    def __init__(self, collection: str, existing: Sequence[str]) -> None:
        super().__init__(
            f"No collection {collection!r} in this store; it holds {sorted(existing)}. "
            "Ingest documents into it first, or open one of those."
        )
        self.collection = collection
        self.existing = sorted(existing)


class CollectionMismatchError(ConanRagError, ValueError):
    """A vector collection was built by another encoder than the one opening it.

    Attributes:
        collection: the collection's name (``None`` where Chroma does not say, as in its
            embedding function checks).
        recorded_model: the model the collection records (``None``: not made by conan-rag).
        offered_model: the model of the encoder offered.
    """

    def __init__(
        self,
        message: str,
        *,
        collection: str | None,
        recorded_model: str | None,
        offered_model: str,
    ) -> None:
        super().__init__(message)
        self.collection = collection
        self.recorded_model = recorded_model
        self.offered_model = offered_model


class QueueShutdownError(ConanRagError, RuntimeError):
    """The encoder's batching queue stopped (interpreter exit) before a request was served."""


class QueueWorkerError(ConanRagError, RuntimeError):
    """The batching queue's worker is gone while a request still waits for it (never a hang).

    This happens to requests queued before the process was forked (the worker thread does not
    exist in the child) or when the worker thread died.

    Attributes:
        reason: what happened to the worker, in a few words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The encoder's batching worker stopped before serving this request ({reason}). "
            "Requests queued before a fork (os.fork, multiprocessing's 'fork' start method, "
            "gunicorn --preload, Celery prefork) are not served in the child: encode again in "
            "the child (its queue starts a new worker). If this happens without a fork, load "
            "the encoder with use_queue=False and report it as a bug."
        )
        self.reason = reason


class ForkedProcessError(ConanRagError, RuntimeError):
    """A model loaded on a GPU was used in a process forked from the one that loaded it.

    CUDA cannot be used in a forked child; load the encoder in the child, or start children
    with the ``"spawn"`` method.

    Attributes:
        device: the device the model was loaded on.
    """

    def __init__(self, device: str) -> None:
        super().__init__(
            f"This encoder was loaded on {device} in a parent process and this process was "
            "forked from it: CUDA cannot run in a forked child. Start worker processes with "
            "the 'spawn' method (multiprocessing.get_context('spawn')) or call load_encoder() "
            "in the child, not before the fork (e.g. no gunicorn --preload)."
        )
        self.device = device


class DeviceOutOfMemoryError(ConanRagError, MemoryError):
    """A single text does not fit on the device even alone.

    Attributes:
        tokens: the length of that text in tokens.
        device: the device.
    """

    def __init__(self, tokens: int, device: str) -> None:
        super().__init__(
            f"Out of memory on {device} embedding one text of {tokens} tokens; lower "
            "max_seq_length or use another device."
        )
        self.tokens = tokens
        self.device = device


class ServerError(ConanRagError, ConnectionError):
    """A conan-rag server did not answer, or refused a request.

    Attributes:
        endpoint: the server's base URL.
        status: the HTTP status (``None``: no answer at all).
    """

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
