"""Tests of kinetix.validation: the shared checks, their error types and messages."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kinetix import validation
from kinetix.validation import (
    check_concrete,
    check_int,
    check_int_param,
    check_real_param,
    is_traced,
    real_array,
    real_scalar,
)


def test_is_traced_looks_at_every_leaf():
    seen = []

    @jax.jit
    def f(x):
        seen.append((is_traced(x), is_traced({"a": 1.0, "b": [x]}), is_traced([1.0, 2])))
        return x

    f(1.0)
    assert seen == [(True, True, False)]
    assert not is_traced(jnp.ones(2)) and not is_traced(None)


@pytest.mark.parametrize("value", [3, np.int64(3), jnp.int32(3), np.array(3, np.uint8)])
def test_int_checks_accept_python_numpy_and_jax_ints(value):
    assert check_int(value, "n", low=0) == 3 and type(check_int(value, "n")) is int
    assert check_int_param(value, "n", 0) == 3 and type(check_int_param(value, "n")) is int


@pytest.mark.parametrize("value", [2.0, True, np.float32(2), jnp.float32(2), "2", np.ones(2, int)])
def test_int_checks_refuse_other_types(value):
    with pytest.raises(TypeError, match=r"steps must be a Python int \(or a NumPy/JAX integer"):
        check_int(value, "steps", low=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got"):
        check_int_param(value, "steps", 0)


def test_int_checks_below_the_minimum():
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        check_int(0, "k", low=1)
    with pytest.raises(ValueError, match="f: k must be >= 1, got 0"):
        check_int(np.int64(0), "k", low=1, where="f")
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        check_int_param(jnp.int32(-1), "seed", 0)
    assert check_int(-5, "axis") == -5  # no bound


def test_traced_values():
    """Static ints refuse a traced value (TypeError, saying how to make it static); a
    hyper-parameter refuses it with a ValueError; real_scalar returns None after checking
    the shape and dtype."""

    @jax.jit
    def f(n, x, v):
        with pytest.raises(TypeError, match="static_args"):
            check_int(n, "steps")
        for check in (check_int_param, check_real_param, check_concrete):
            with pytest.raises(ValueError, match="width must be a concrete value"):
                check(n, "width")
        assert real_scalar(x, "gamma") is None
        with pytest.raises(ValueError, match="gamma must be a scalar, got shape"):
            real_scalar(v, "gamma")
        return x

    f(2, 0.5, jnp.ones(2))


def test_real_checks():
    assert check_real_param(np.float32(0.5), "dt") == 0.5 and real_scalar(3, "g") == 3.0
    assert type(real_scalar(jnp.float32(0.25), "g")) is float
    np.testing.assert_array_equal(real_array([1, 2], "x"), np.array([1.0, 2.0]))
    assert real_array(np.float32(2), "x").dtype == np.float64
    for bad, msg in (
        (True, "x must be a real number, got the bool"),
        ("1", r"x must be real \(integer or float\)"),
        (1 + 2j, r"x must be real \(integer or float\)"),
        (object(), "x must be real"),
    ):
        with pytest.raises(ValueError, match=msg):
            real_array(bad, "x")
    for bad, msg in (
        (float("nan"), r"dt must be a finite number \(not NaN or inf\)"),
        (np.float32("inf"), "dt must be a finite number"),
        (np.ones(2), r"dt must be a scalar, got an array of shape \(2,\)"),
        (True, "dt must be a real number"),
    ):
        with pytest.raises(ValueError, match=msg):
            check_real_param(bad, "dt")
    for bad, msg in (
        (True, "g must be a real number, got the bool"),
        ("0.5", "g must be a real number, got '0.5'"),
        (np.ones((1, 1)), r"g must be a scalar, got shape \(1, 1\)"),
    ):
        with pytest.raises(ValueError, match=msg):
            real_scalar(bad, "g")
    assert np.isnan(real_scalar(float("nan"), "g"))  # range checks are the caller's


def test_data_modules_use_the_shared_check():
    """The data modules validate with the one shared function."""
    from kinetix.data import images, text

    assert text._check_int is check_int_param
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
        images.epoch_permutation(4, seed=0, epoch=-1)


def test_doctests():
    assert doctest.testmod(validation, raise_on_error=False).failed == 0
