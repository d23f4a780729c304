"""Checks of hyper-parameters, shared by every module (one neutral place).

Python numbers, NumPy scalars and concrete JAX scalars are all checked the
same way: ``np.float32(-1)`` is refused exactly like ``-1.0``. A traced value
(under ``jit``, or a schedule under ``optax.inject_hyperparams``) cannot be
checked when the transformation is built; what happens to an out-of-range
traced value is documented by each function that accepts one.

Two families, by the error a value of the wrong type gets:

* arguments of functions and transformations (:func:`check_int`,
  :func:`check_real`, :func:`concrete_float`): ``TypeError`` for a wrong
  type, ``ValueError`` for a value out of range;
* hyper-parameters of modules and data generators (:func:`check_int_param`,
  :func:`check_real_param`, :func:`real_array`, :func:`real_scalar`,
  :func:`check_flag`): ``ValueError`` for every bad value, type included.

Example:
  >>> check_int(3, "steps", low=0), check_int_param(np.int64(4), "width")
  (3, 4)
  >>> check_real_param(np.float32(0.5), "dt")
  0.5
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(value) -> bool:
    """True when ``value``, or a leaf of it (a pytree), is traced: its number is not known yet."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def concrete_float(value, name: str, where: str = "") -> float | None:
    """``float(value)`` for a real scalar (Python, NumPy or concrete JAX); None when traced.

    Raises:
      TypeError: ``value`` is a bool, a string, complex, or not a scalar.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, jax.core.Tracer):
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
    """``int(value)`` for an integral Python/NumPy/JAX scalar ``>= low`` (no bools, no floats).

    For arguments that set shapes or loop lengths, which must be known when
    tracing.

    Raises:
      TypeError: a bool, a float (even ``2.0``), a non-scalar, or a traced value.
      ValueError: below ``low``.

    Example:
      >>> check_int(np.int32(3), "steps", low=0)
      3
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{prefix}{name} must be a Python int, got a traced value. Under "
            f"optax.inject_hyperparams pass static_args=({name!r},)."
        )
    integral = isinstance(value, numbers.Integral) or (
        hasattr(value, "dtype") and np.shape(value) == () and np.dtype(value.dtype).kind in "iu"
    )
    if isinstance(value, bool | np.bool_) or not integral:
        raise TypeError(
            f"{prefix}{name} must be a Python int (or a NumPy/JAX integer scalar known before "
            f"tracing), got {value!r} ({type(value).__name__})."
        )
    n = int(value)
    if low is not None and n < low:
        raise ValueError(f"{prefix}{name} must be >= {low}, got {n}.")
    return n


def check_concrete(value, name: str) -> None:
    """``ValueError`` when a hyper-parameter is traced: it can be neither checked nor stored.

    Example:
      >>> check_concrete(1.0, "dt")  # a Python number: no error
    """
    if is_traced(value):
        raise ValueError(
            f"{name} must be a concrete value, got a traced one: hyper-parameters are fixed "
            "when a module (or data set) is built and cannot be checked or stored under "
            "jit/grad/vmap; pass a Python or NumPy number (or build it outside the "
            "transformation)."
        )


def check_int_param(value, name: str, minimum: int = 1) -> int:
    """An integer hyper-parameter ``>= minimum`` as a Python int.

    Accepted: a Python or NumPy int, or a concrete 0-d integer array.

    Raises:
      ValueError: a bool, a float (even ``2.0``), a string, a non-scalar, a
        traced value, or a value below ``minimum``.

    Example:
      >>> check_int_param(jnp.int32(4), "width")
      4
    """
    check_concrete(value, name)
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not is_int and isinstance(value, np.ndarray | jax.Array):
        is_int = value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer)
    if not is_int:
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})."
        )
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {int(value)}.")
    return int(value)


def real_array(value, name: str) -> np.ndarray:
    """A concrete real value or array (integer or float, not bool) as a float64 NumPy array.

    Raises:
      ValueError: a bool, a string, a complex or non-numeric value.

    Example:
      >>> real_array([1, 2], "dt")
      array([1., 2.])
    """
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a real number, got the bool {value!r}.")
    try:
        arr = np.asarray(value)
    except Exception as err:  # a non-numeric object
        raise ValueError(f"{name} must be a real number or array, got {value!r}.") from err
    if not (np.issubdtype(arr.dtype, np.integer) or jnp.issubdtype(arr.dtype, jnp.floating)):
        raise ValueError(f"{name} must be real (integer or float), got {value!r} ({arr.dtype}).")
    return arr.astype(np.float64)


def check_real_param(value, name: str) -> float:
    """A real, finite, concrete scalar hyper-parameter as a Python float.

    Accepted: a Python or NumPy number, or a concrete 0-d integer or float array.

    Raises:
      ValueError: a bool, a non-real or non-scalar value, NaN, inf, or a traced value.

    Example:
      >>> check_real_param(jnp.float32(2.0), "capacitance")
      2.0
    """
    check_concrete(value, name)
    arr = real_array(value, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {arr.shape}.")
    v = float(arr)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number (not NaN or inf), got {value!r}.")
    return v


def real_scalar(value, name: str) -> float | None:
    """A real scalar (Python/NumPy number or 0-d array) as a float; ``None`` when traced.

    A traced value cannot be checked beyond its shape and dtype, which must
    still be a real scalar's.

    Raises:
      ValueError: a bool, a non-real value (e.g. a string) or a non-scalar.

    Example:
      >>> real_scalar(np.float32(0.5), "gamma")
      0.5
    """
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a real number, got the bool {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}.")
    dtype = jnp.result_type(value) if isinstance(value, jax.Array) else np.asarray(value).dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r} ({dtype}).")
    if is_traced(value):
        return None
    return float(np.asarray(jax.device_get(value)))


def check_flag(value, name: str) -> bool:
    """``bool(value)`` for a Python or NumPy bool; ``ValueError`` for anything else (``0``, ``"no"``)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    return bool(value)
