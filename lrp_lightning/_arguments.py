"""Checks of constructor arguments: a bad value raises ``TypeError``/``ValueError`` naming the argument.

Every public constructor of the engine, the metrics and the callback validates its arguments with
these helpers when it is called, so that a mistake surfaces at once, with the argument's name,
instead of as an ``AttributeError`` or ``IndexError`` deep inside a later forward or backward pass.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Sequence

import torch


def real_number(name: str, value: Any, minimum: Optional[float] = None, strict: bool = False) -> float:
    """``value`` as a finite float, at least (``strict``: above) ``minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not a real number (bools are not).
    ValueError
        If it is NaN, infinite or below the minimum.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def integer(name: str, value: Any, minimum: Optional[int] = None) -> int:
    """``value`` as an int of at least ``minimum`` (bools are not ints here).

    Raises
    ------
    TypeError, ValueError
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is a bool.

    Raises
    ------
    TypeError
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def optional_callable(name: str, value: Any) -> Optional[Callable]:
    """``value`` if it is None or callable.

    Raises
    ------
    TypeError
    """
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__} {value!r}")
    return value


def sequence(name: str, value: Any, check: Callable[[str, Any], Any], allow_none: bool = True) -> list:
    """``value`` (None: empty) as a list, each item passed through ``check(f"{name}[i]", item)``.

    Raises
    ------
    TypeError
        If ``value`` is not a list/tuple (or None where allowed), or an item fails ``check``.
    """
    if value is None and allow_none:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple, got {type(value).__name__} {value!r}")
    return [check(f"{name}[{index}]", item) for index, item in enumerate(value)]


def instance(kind: type) -> Callable[[str, Any], Any]:
    """An item check for :func:`sequence`: the item must be an instance of ``kind``."""

    def check(name: str, value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    return check


def instance_of_callable(name: str, value: Any) -> Callable:
    """An item check for :func:`sequence`: the item must be callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")
    return value


def text(name: str, value: Any) -> str:
    """``value`` if it is a str.

    Raises
    ------
    TypeError
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    return value


def names(name: str, value: Any) -> list:
    """A str, None or a list/tuple of str, as a list of str.

    Raises
    ------
    TypeError
    """
    if isinstance(value, str):
        return [value]
    return sequence(name, value, text)


def _module_types(name: str, value: Any) -> Any:
    kinds = value if isinstance(value, tuple) else (value,)
    if not kinds or not all(isinstance(kind, type) for kind in kinds):
        raise TypeError(f"{name} must be a module type or a tuple of them, got {value!r}")
    return value


def _pair(name: str, value: Any, first: Callable[[str, Any], Any], second: Callable[[str, Any], Any]) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair, got {type(value).__name__} {value!r}")
    return first(f"{name}[0]", value[0]), second(f"{name}[1]", value[1])


def rule_map(name: str, value: Any, hook_type: type, allow_none: bool = True) -> list:
    """A layer map: a list of ``(module type or tuple of types, hook)`` pairs (None: empty).

    Raises
    ------
    TypeError
    """
    return sequence(
        name, value, lambda item_name, item: _pair(item_name, item, _module_types, instance(hook_type)), allow_none
    )


def name_map(name: str, value: Any, target: Callable[[str, Any], Any]) -> list:
    """A name map: a list of ``(module names, target)`` pairs (names: a str or a list/tuple of str).

    Raises
    ------
    TypeError
    """
    return sequence(name, value, lambda item_name, item: _pair(item_name, item, names, target))


def tensor_like(name: str, value: Any) -> torch.Tensor:
    """A real number, a real tensor or a (nested) sequence of real numbers, as a tensor.

    Raises
    ------
    TypeError
        If ``value`` is none of these, or is complex or boolean.
    """
    if isinstance(value, bool) or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{name} must be a number, a tensor or a sequence of numbers, got {type(value).__name__}")
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a number, a tensor or a sequence of numbers, got {type(value).__name__} {value!r}"
        ) from error
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {tensor.dtype}")
    return tensor
