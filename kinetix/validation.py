"""Checks of hyper-parameters, shared by every module (one neutral place).

Python numbers, NumPy scalars and concrete JAX scalars are all checked the
same way: ``np.float32(-1)`` is refused exactly like ``-1.0``. A traced value
(under ``jit``, or a schedule under ``optax.inject_hyperparams``) cannot be
checked when the transformation is built; what happens to an out-of-range
traced value is documented by each function that accepts one.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def is_traced(value) -> bool:
    """True for an abstract (traced) JAX value, whose number is not known yet."""
    return isinstance(value, jax.core.Tracer)


def concrete_float(value, name: str, where: str = "") -> float | None:
    """``float(value)`` for a real scalar (Python, NumPy or concrete JAX); None when traced.

    Raises:
      TypeError: ``value`` is a bool, a string, complex, or not a scalar.
    """
    prefix = f"{where}: " if where else ""
    if is_traced(value):
        return None
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{prefix}{name} must be a number, got the bool {value!r}.")
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        if np.shape(value) != ():
            raise TypeError(
                f"{prefix}{name} must be a scalar, got an array of shape {value.shape}."
            )
        kind = np.dtype(value.dtype).kind if not _is_key(value) else "key"
        if kind not in "fiu":
            raise TypeError(f"{prefix}{name} must be a real number, got dtype {value.dtype}.")
        return float(np.asarray(value))
    raise TypeError(f"{prefix}{name} must be a number, got {type(value).__name__} {value!r}.")


def _is_key(value) -> bool:
    try:
        return jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
    except TypeError:
        return False


def check_real(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    where: str = "",
) -> float | None:
    """Checks that a real scalar is finite (unless ``allow_inf``) and in a range.

    Args:
      value: the hyper-parameter (Python, NumPy or JAX scalar; traced values pass).
      name: its name, for the message.
      low, high: bounds (``None``: unbounded).
      low_open, high_open: exclude the bound itself.
      allow_inf: accept ``+-inf`` (NaN is never accepted).
      where: the function or class, for the message.

    Returns:
      The value as a float, or ``None`` when it is traced.

    Raises:
      ValueError: NaN, inf, or out of range. TypeError: not a real scalar.

    Example:
      >>> check_real(0.5, "coll_coef", low=0.0, high=1.0)
      0.5
    """
    x = concrete_float(value, name, where)
    if x is None:
        return None
    prefix = f"{where}: " if where else ""
    if math.isnan(x) or (math.isinf(x) and not allow_inf):
        raise ValueError(f"{prefix}{name} must be a finite number, got {x}.")
    lo_ok = low is None or (x > low if low_open else x >= low)
    hi_ok = high is None or (x < high if high_open else x <= high)
    if not (lo_ok and hi_ok):
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{prefix}{name} must be in {lo}, {hi}, got {x}.")
    return x


def check_int(value, name: str, *, low: int | None = None, where: str = "") -> int:
    """``int(value)`` for an integral Python/NumPy/JAX scalar ``>= low`` (no bools, no floats)."""
    prefix = f"{where}: " if where else ""
    if is_traced(value):
        raise TypeError(
            f"{prefix}{name} must be a Python int, got a traced value. Under "
            f"optax.inject_hyperparams pass static_args=({name!r},)."
        )
    integral = isinstance(value, numbers.Integral) or (
        hasattr(value, "dtype") and np.shape(value) == () and np.dtype(value.dtype).kind in "iu"
    )
    if isinstance(value, bool | np.bool_) or not integral:
        raise TypeError(f"{prefix}{name} must be an int, got {type(value).__name__} {value!r}.")
    n = int(value)
    if low is not None and n < low:
        raise ValueError(f"{prefix}{name} must be >= {low}, got {n}.")
    return n


def check_flag(value, name: str) -> bool:
    """``bool(value)`` for a Python or NumPy bool; ``ValueError`` for anything else (``0``, ``"no"``)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    return bool(value)
