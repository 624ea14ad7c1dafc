"""Settings: the base of every frozen config class, and the checks their fields share.

A config class is a ``@dataclass(frozen=True)`` deriving from :class:`Settings`: it is built,
read back (:meth:`Settings.from_dict`) and changed (:meth:`Settings.replace`) strictly (an
unknown key is an error listing the valid ones), and every instance is validated by its
:meth:`Settings.validate`, which calls the checks below. Each check raises
:class:`~conan_rag.errors.ConanConfigError` naming the setting and the value.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Window(Settings):
    ...     size: int = 8
    ...     shape: str = "flat"
    ...     def validate(self) -> None:
    ...         check_int("size", self.size)
    ...         check_choice("shape", self.shape, ("flat", "round"))
    >>> Window.from_dict({"size": 4}).replace(shape="round")
    Window(size=4, shape='round')
    >>> Window(size=0)
    Traceback (most recent call last):
    ...
    conan_rag.errors.ConanConfigError: size must be an integer >= 1, not 0.
    >>> Window.from_dict({"sise": 4})
    Traceback (most recent call last):
    ...
    conan_rag.errors.ConanConfigError: Unknown setting(s) ['sise']; valid options are ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from conan_rag.errors import ConanConfigError

__all__ = ["Settings", "check_choice", "check_float", "check_int"]

S = TypeVar("S", bound="Settings")


class Settings:
    """Base of ``@dataclass(frozen=True)`` config classes: strict, validated, plain data.

    Subclasses override :meth:`validate` (calling ``super().validate()``) and may set
    ``setting_kind`` (``"encoder"``, ``"server"``, ...), which names them in the unknown-key
    error.
    """

    setting_kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the fields; raise :class:`~conan_rag.errors.ConanConfigError` if one is bad."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def _check_keys(cls, keys: Any) -> None:
        valid = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        unknown = sorted(set(keys) - set(valid))
        if unknown:
            kind = f"{cls.setting_kind} " if cls.setting_kind else ""
            raise ConanConfigError(
                f"Unknown {kind}setting(s) {unknown}; valid options are {valid}.",
                setting=unknown[0],
                choices=valid,
            )

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Build from :meth:`to_dict` output; unknown keys are an error listing the valid ones."""
        cls._check_keys(data)
        return cls(**dict(data))

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with some fields changed (unknown names are an error)."""
        self._check_keys(changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _none_ok(value: Any, allow_none: bool) -> bool:
    return allow_none and value is None


def check_int(
    name: str,
    value: Any,
    minimum: int = 1,
    *,
    allow_none: bool = False,
    maximum: int | None = None,
) -> None:
    """An integer (not a bool) ``>= minimum`` (and ``<= maximum`` when given).

    Example:
        >>> check_int("port", 8080, 0, maximum=65535)
        >>> check_int("top_k", True)
        Traceback (most recent call last):
        ...
        conan_rag.errors.ConanConfigError: top_k must be an integer >= 1, not True.
    """
    if _none_ok(value, allow_none):
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and (maximum is None or value <= maximum):
        return
    if maximum is not None:
        wanted = f"an integer in [{minimum}, {maximum}]"
    else:
        wanted = f"an integer >= {minimum}"
    if allow_none:
        wanted += " or None"
    raise ConanConfigError(f"{name} must be {wanted}, not {value!r}.", setting=name, value=value)


def check_choice(
    name: str, value: Any, choices: Sequence[Any], *, allow_none: bool = False
) -> None:
    """One of ``choices`` (``True`` and ``1`` are told apart); the message lists them.

    Example:
        >>> check_choice("use_queue", 1, (True, False))
        Traceback (most recent call last):
        ...
        conan_rag.errors.ConanConfigError: use_queue must be one of [True, False], not 1.
    """
    if _none_ok(value, allow_none):
        return
    if any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        return
    listed = [*choices, None] if allow_none else list(choices)
    raise ConanConfigError(
        f"{name} must be one of {listed}, not {value!r}.",
        setting=name,
        value=value,
        choices=tuple(listed),
    )


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    allow_none: bool = False,
) -> None:
    """A number (int or float, not a bool, not NaN) in ``[low, high]`` (open where None).

    Example:
        >>> check_float("batch_wait_ms", 2.5, 0, 1000)
        >>> check_float("drain_s", -1, 0)
        Traceback (most recent call last):
        ...
        conan_rag.errors.ConanConfigError: drain_s must be a number >= 0, not -1.
    """
    if _none_ok(value, allow_none):
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if number and (low is None or value >= low) and (high is None or value <= high):
        return
    if low is not None and high is not None:
        wanted = f"a number in [{low}, {high}]"
    elif low is not None:
        wanted = f"a number >= {low}"
    elif high is not None:
        wanted = f"a number <= {high}"
    else:
        wanted = "a number"
    if allow_none:
        wanted += " or None"
    raise ConanConfigError(f"{name} must be {wanted}, not {value!r}.", setting=name, value=value)
