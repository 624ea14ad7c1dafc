"""How an adapter holds its model: the shared encoder (or a server's), rebound when settings change.

:class:`SharedEncoderMixin` gives the pydantic adapters the same object behaviour: changing a
setting (assignment or ``model_copy(update=...)``) rebinds the shared encoder, so the vectors
always follow the settings; copies and pickles carry settings, never weights (an
:class:`~conan_rag.Encoder` pickles by its config). :class:`SharedRerankerMixin` does the same
for the shared cross-encoder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from conan_rag.adapter_kit.translation import model_alias
from conan_rag.adapter_kit.vocabulary import ENCODER_OPTIONS, SERVER_DECIDES
from conan_rag.errors import ConanConfigError

LIST_ON_LOOP = 65_536  # floats converted to lists on the event loop (a few ms); more: a thread


def open_encoder(settings: dict[str, Any]) -> Any:
    """The shared encoder for adapter settings: a local model, or a server's with ``endpoint``.

    Args:
        settings: :func:`~conan_rag.load_encoder` arguments, plus ``endpoint`` and ``api_key``.

    Returns:
        An :class:`~conan_rag.encoder.Encoder`, or a :class:`~conan_rag.remote.RemoteEncoder`.

    Raises:
        ConanConfigError: with an endpoint, a setting the server decides (device, dtype,
            prompts, ...) was given, or the model named is not the one the server runs.
    """
    settings = dict(settings)
    endpoint = settings.pop("endpoint", None)
    api_key = settings.pop("api_key", None)
    if not endpoint:
        from conan_rag.registry import load_encoder

        return load_encoder(settings.pop("model", None), **settings)
    from conan_rag.model.files import DEFAULT_MODEL
    from conan_rag.remote import remote_encoder

    local = [k for k, v in SERVER_DECIDES.items() if settings.get(k, v) != v]
    if local:
        raise ConanConfigError(
            f"{local} are decided by the server at {endpoint}; leave them out with an endpoint "
            "(set them with `conan-rag serve` flags), or drop endpoint to run the model here.",
            setting=local[0],
        )
    encoder = remote_encoder(endpoint, api_key=api_key, truncate_dim=settings.get("truncate_dim"))
    model = settings.get("model")
    if model not in (None, DEFAULT_MODEL, encoder.model_id):
        raise ConanConfigError(
            f"The server at {endpoint} runs {encoder.model_id!r}, not {model!r}; leave model out "
            "with an endpoint, or point at a server running that model.",
            setting="model",
            value=model,
        )
    return encoder


class RebindingMixin:
    """Settings that mean what they say, for pydantic adapters (put it before ``BaseModel``).

    Assigning a field that :meth:`_rebinds` re-runs :meth:`_bind` (which loads or reuses the
    shared model); a value it refuses raises and leaves the adapter as it was.
    ``model_copy(update=...)`` builds a validated new adapter with those settings.
    """

    BOUND_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _bind(self) -> None:
        raise NotImplementedError

    def _rebinds(self, name: str) -> bool:
        return name in self.BOUND_FIELDS

    def _update_names(self, update: Mapping[str, Any]) -> Mapping[str, Any]:
        """The names ``model_copy(update=...)`` passes to the constructor."""
        return update

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._rebinds(name):
            super().__setattr__(name, value)
            return
        old = getattr(self, name)
        super().__setattr__(name, value)  # pydantic validates the value
        try:
            self._bind()
        except BaseException:
            super().__setattr__(name, old)
            raise

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy; with ``update``, a new validated adapter bound to the updated settings."""
        if not update:
            return super().model_copy(deep=deep)  # type: ignore[misc]
        fields = type(self).model_fields  # type: ignore[attr-defined]
        values = {name: getattr(self, name) for name in fields}
        return type(self)(**{**values, **self._update_names(update)})


class SharedEncoderMixin(RebindingMixin):
    """Object behaviour shared by the pydantic embedding adapters (put it before ``BaseModel``).

    * Assigning a field in :attr:`ENCODER_FIELDS` rebinds the shared encoder (a view of the same
      weights when only prompts or sizes change); a value the encoder refuses raises and leaves
      the adapter as it was.
    * ``model_copy(update=...)`` builds a validated new adapter with those settings.
    * ``pickle``, ``copy`` and ``deepcopy`` carry settings; the encoder re-attaches to the shared
      one of the process that unpickles it.

    Subclasses call :meth:`_bind` at the end of ``__init__``; one whose field names differ from
    :data:`VOCABULARY` sets ``ENCODER_FIELDS`` (field name -> :func:`~conan_rag.load_encoder`
    argument).
    """

    ENCODER_FIELDS: ClassVar[dict[str, str]] = {option: option for option in ENCODER_OPTIONS}

    def encoder_settings(self) -> dict[str, Any]:
        """The :func:`~conan_rag.load_encoder` arguments these settings stand for."""
        settings = {arg: getattr(self, name) for name, arg in self.ENCODER_FIELDS.items()}
        key: Any = settings.get("api_key")
        if hasattr(key, "get_secret_value"):  # pydantic SecretStr
            settings["api_key"] = key.get_secret_value()
        return settings

    def _bind(self) -> None:
        self._encoder = open_encoder(self.encoder_settings())

    def _rebinds(self, name: str) -> bool:
        return name in self.ENCODER_FIELDS

    async def _aencode_lists(self, texts: list[str], kind: Any) -> list[list[float]]:
        """``aencode`` as plain float lists, converted off the event loop when large.

        Turning 2,000 Conan vectors (1,792 floats each) into lists takes a few hundred
        milliseconds of CPU; on the loop it would stall every other coroutine that long.
        """
        encoder, normalize = self._encoder, self.normalize  # type: ignore[attr-defined]
        vectors = await encoder.aencode(texts, kind=kind, normalize=normalize)
        if vectors.size <= LIST_ON_LOOP:
            return vectors.tolist()  # type: ignore[no-any-return]
        return await asyncio.to_thread(vectors.tolist)  # type: ignore[no-any-return]


class SharedRerankerMixin(RebindingMixin):
    """Object behaviour shared by the pydantic reranker adapters (put it before ``BaseModel``).

    The fields in :attr:`BOUND_FIELDS` pick the shared :class:`~conan_rag.reranking.Reranker`
    (:func:`~conan_rag.reranking.load_reranker`); assigning one rebinds it, and
    ``model_copy(update=...)`` accepts ``model_name`` for ``model``.
    """

    BOUND_FIELDS: ClassVar[tuple[str, ...]] = ("model", "revision", "device", "dtype", "max_length")

    @property
    def reranker(self) -> Any:
        """The shared :class:`~conan_rag.reranking.Reranker` doing the work."""
        return self._reranker

    def _bind(self) -> None:
        from conan_rag.reranking import load_reranker

        settings = {name: getattr(self, name) for name in self.BOUND_FIELDS}
        self._reranker = load_reranker(settings.pop("model"), **settings)

    def _update_names(self, update: Mapping[str, Any]) -> Mapping[str, Any]:
        return model_alias(update)
