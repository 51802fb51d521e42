"""What counts as a number: the value checks every layer shares (configs, datasets, losses, reports).

``bool`` is never a number here, although Python makes it an ``int``: a ``True`` where a
count or a weight belongs is a mistake, not a 1.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

_BOOLS = (bool, np.bool_)


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` (numpy's included), not a ``bool``."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, _BOOLS)


def is_int(value: Any) -> bool:
    """An ``int`` (numpy's included), not a ``bool``; ``1.0`` is not one."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, _BOOLS)


def is_integral(value: Any) -> bool:
    """An ``int``, or a finite ``float`` with an integer value (``1.0``), as JSON writers may give ids."""
    if is_int(value):
        return True
    return isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer()


def is_finite_number(value: Any) -> bool:
    """A number (:func:`is_number`) that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)


def check_finite_number(value: Any, name: str, *, above: Optional[float] = None, at_least: Optional[float] = None,
                        note: str = "") -> float:
    """``float(value)`` if it is a finite number ``> above`` / ``>= at_least``; otherwise a ``ValueError``
    ``"{name} must be a finite number > {above}{note}, got {value!r}"``."""
    if above is not None:
        ok, bound = is_finite_number(value) and value > above, f" > {above:g}"
    elif at_least is not None:
        ok, bound = is_finite_number(value) and value >= at_least, f" >= {at_least:g}"
    else:
        ok, bound = is_finite_number(value), ""
    if not ok:
        raise ValueError(f"{name} must be a finite number{bound}{note}, got {value!r}")
    return float(value)
