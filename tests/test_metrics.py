"""Tests of kinetix.metrics."""

import jax.numpy as jnp
import numpy as np
import pytest

from kinetix import metrics
from tests import reference


def test_cosine_matrix_and_similarity_match_reference():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 7)).astype(np.float32)  # Flax (in, out): 7 neurons in R^5
    c = np.asarray(metrics.cosine_matrix(w))
    ref = reference.cos_matrix(w.T.astype(np.float64))
    np.testing.assert_allclose(c, ref, atol=1e-5)
    s = metrics.neuron_similarity(w)
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(float(s.mean_abs_cos), np.abs(ref[off]).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(s.max_abs_cos), np.abs(ref[off]).max(), rtol=1e-5)


def test_condensed_layer_has_similarity_one():
    # Every neuron on one line (some flipped): fully condensed.
    direction = np.array([1.0, -2.0, 0.5], np.float32)
    w = np.stack([direction * s for s in (1.0, -0.5, 2.0, -3.0)], axis=1)
    s = metrics.neuron_similarity(w)
    np.testing.assert_allclose(float(s.mean_abs_cos), 1.0, rtol=1e-5)
    # Orthogonal neurons: 0.
    s = metrics.neuron_similarity(np.eye(4, dtype=np.float32))
    assert float(s.max_abs_cos) == 0.0


def test_weight_correlation_averages_layers():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 6)).astype(np.float32)
    b = np.eye(3, dtype=np.float32)
    tree = {"a": a, "b": b, "bias": np.zeros(3, np.float32)}
    expected = (float(metrics.neuron_similarity(a).mean_abs_cos) + 0.0) / 2
    np.testing.assert_allclose(float(metrics.weight_correlation(tree)), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="no leaf"):
        metrics.weight_correlation({"bias": jnp.zeros(3)})
    with pytest.raises(ValueError, match="at least 2 neurons"):
        metrics.neuron_similarity(jnp.ones((3, 1)))


def test_zero_neuron_is_finite():
    w = np.zeros((3, 4), np.float32)
    w[:, 0] = 1.0
    s = metrics.neuron_similarity(w)
    assert np.isfinite(float(s.mean_abs_cos)) and float(s.max_abs_cos) == 0.0
