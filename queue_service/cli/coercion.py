"""Plain conversion of ``str``/``int``/``float``/``bool`` options, so a command does not wait for pydantic.

Typer (0.29) converts every parameter through a pydantic ``TypeAdapter`` built on first use: any command with
a string option imported pydantic, about 0.3 s on a 2-core box, more than a whole ``gpuq jobs`` may take.
For the plain annotations (every option of the CLI but paths, and lists of them) the conversion is
``str``/``int``/``float``; typer's own is kept for anything else (paths, ranges, choices, custom parsers)
and wherever its internals are not the ones this was written against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args, get_origin

TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE | FALSE:
        return text in TRUE
    raise ValueError(f"{value!r} is not a valid boolean")


def to_int(value: Any) -> int:
    if isinstance(value, bool):  # int(True) is 1: a flag is not a number
        raise ValueError(f"{value!r} is not a valid integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a valid integer") from None


def to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a valid float") from None


CONVERT: dict[Any, Callable[[Any], Any]] = {str: str, int: to_int, float: to_float, bool: to_bool}


def converter(annotation: Any) -> tuple[Callable[[Any], Any], bool] | None:
    """The conversion of one value and whether the annotation is a list of them; None: leave it to typer."""
    if get_origin(annotation) is list:
        [item] = get_args(annotation) or [None]
        found = CONVERT.get(item)
        return (found, True) if found else None
    found = CONVERT.get(annotation)
    return (found, False) if found else None


@cache
def plain_param_class() -> type | None:
    """A typer ``RuntimeParam`` that converts with ``convert``; None with a typer whose internals differ."""
    try:
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam
    except ImportError:  # another typer: its own conversion, only slower
        return None

    @dataclass(frozen=True)
    class PlainParam(RuntimeParam):  # typer's coerce() handles None and the multi-value checks, then calls this
        convert: Callable[[Any], Any]
        is_list: bool

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                if self.is_list:
                    items = value if isinstance(value, list | tuple) else [value]
                    return [self.convert(item) for item in items]
                return self.convert(value)
            except ValueError as exc:
                raise BadParameter(str(exc), ctx=ctx, param=param) from None

    return PlainParam


def plain_runtime_param(descriptor: Any) -> Any:
    """The plain conversion for a typer ``TypeDescriptor``, or None (paths, ranges, choices, parsers: typer's)."""
    plain = plain_param_class()
    info = descriptor.parameter_info
    if plain is None or descriptor.is_ranged or descriptor.is_choice or getattr(info, "parser", None) is not None:
        return None
    found = converter(descriptor.annotation)
    if found is None:
        return None
    return plain(parameter_info=info, annotation=descriptor.annotation, convert=found[0], is_list=found[1])


def wrap(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Typer's ``get_runtime_param``, giving the plain conversion where there is one (the rest: ``original``)."""
    if getattr(original, "plain", False):
        return original

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            self._runtime_param = plain_runtime_param(self.type_descriptor)
        return self._runtime_param if self._runtime_param is not None else original(self)

    get_runtime_param.plain = True  # type: ignore[attr-defined]
    return get_runtime_param


def install() -> bool:
    """Convert plain parameters without pydantic in this process (every command, the help and completion
    options typer adds as it parses); False if this typer has no such hook (its conversion stays)."""
    try:
        from typer.core import _TyperParameter
    except ImportError:
        return False
    original = getattr(_TyperParameter, "get_runtime_param", None)
    if original is None or plain_param_class() is None:
        return False
    setattr(_TyperParameter, "get_runtime_param", wrap(original))  # noqa: B010 - a method replaced on purpose
    return True
