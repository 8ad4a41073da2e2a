"""Argument checks for the data set and model factories, and the memory budget they share.

Each check returns the value in its plain Python type or raises ``ConfigError`` with one
sentence naming the owner (``mynet``), the option (``--model-option width`` for an option a
user sets on the command line, plain ``input_size`` for one the run derives from the data),
the bad value and the accepted range. Booleans are not numbers here, and NaN and infinity
are never accepted.

A base module: it depends on nothing of the project but ``src.errors``, so the data sets
and the models both use it without depending on each other.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, List, Optional, Sequence

import numpy as np
from .errors import ConfigError

GIB = 1 << 30
BUDGET_TEXT = "the smaller of 1 GiB and a quarter of this machine's memory"


def option_label(owner: str, name: str, flag: Optional[str] = None) -> str:
    """``"--model-option width for mynet"``, or ``"mynet's input_size"`` without a flag."""
    return f"{flag} {name} for {owner}" if flag else f"{owner}'s {name}"


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: Any, owner: str, name: str, minimum: int, flag: Optional[str] = None, why: str = "") -> int:
    """``value`` as an ``int`` when it is an integer >= ``minimum``.

    Args:
        why: a parenthetical appended to the requirement, e.g. ``" (images of at least 4x4 pixels)"``.
    """
    if not is_integer(value) or value < minimum:
        raise ConfigError(f"{option_label(owner, name, flag)} must be an integer >= {minimum}{why}, got {value!r}.")
    return int(value)


def check_number(
    value: Any, owner: str, name: str, minimum: float, below: Optional[float] = None, flag: Optional[str] = None
) -> float:
    """``value`` as a ``float`` when it is finite, >= ``minimum`` and (if given) < ``below``."""
    if below is None:
        requirement = f"a finite number >= {minimum:g}"
    else:
        requirement = f"a number from {minimum:g} to below {below:g}"
    if not is_real(value) or not math.isfinite(value) or value < minimum or (below is not None and value >= below):
        raise ConfigError(f"{option_label(owner, name, flag)} must be {requirement}, got {value!r}.")
    return float(value)


def check_int_list(
    value: Any,
    owner: str,
    name: str,
    length: Optional[int] = None,
    minimum: int = 1,
    flag: Optional[str] = None,
    example: str = "[256, 128]",
) -> List[int]:
    """``value`` as a list of ints when it is a list or tuple of integers >= ``minimum``
    (of exactly ``length`` items when given). A string is not a list of numbers."""
    ok = isinstance(value, (list, tuple)) and (length is None or len(value) == length)
    ok = ok and all(is_integer(item) and item >= minimum for item in value)
    if not ok:
        count = f"{length} integers" if length is not None else "a list of integers"
        raise ConfigError(
            f"{option_label(owner, name, flag)} must be {count} >= {minimum} such as {example}, got {value!r}."
        )
    return [int(item) for item in value]


def check_bool(value: Any, owner: str, name: str, flag: Optional[str] = None) -> bool:
    """``value`` when it is ``True`` or ``False`` (the text ``"no"`` must not mean yes)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{option_label(owner, name, flag)} must be true or false, got {value!r}.")
    return bool(value)


def memory_budget_bytes() -> int:
    """The most a factory may allocate for one data set or one model's weights: the
    smaller of 1 GiB and a quarter of physical memory (1 GiB where that is unknown)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return GIB
    return min(GIB, physical // 4) if physical > 0 else GIB


def format_bytes(count: float) -> str:
    """``1073741824`` -> ``"1.0 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def check_parameter_budget(count: int, owner: str, described: str, advice: str) -> None:
    """Refuse a model whose float32 weights alone exceed the memory budget, before any
    allocation (a huge width would otherwise fail deep inside torch, or be killed).

    Args:
        count: the model's parameter count, computed from its arguments.
        described: the arguments responsible, e.g. ``"width 100000"``.
        advice: what to change, e.g. ``"use a smaller --model-option width"``.
    """
    budget = memory_budget_bytes()
    if count * 4 > budget:
        raise ConfigError(
            f"{owner} with {described} would have {count:,} parameters ({format_bytes(count * 4)} as float32), "
            f"over the {format_bytes(budget)} limit for model weights ({BUDGET_TEXT}); {advice}."
        )


def product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result
