"""Tests of kinetix.collision against NumPy transcriptions of the KO paper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kinetix import collision
from tests import reference


def _random_wg(seed, n, d, w_scale=0.3):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(n, d)) * w_scale).astype(np.float32)
    g = rng.normal(size=(n, d)).astype(np.float32)
    return w, g


def _directions_from(key):
    """The unit directions hard_collide uses for rule='paper' (drawn from split(key)[0])."""
    dir_key, _ = jax.random.split(key)

    def directions(pairs):
        if not pairs:
            return {}
        i = jnp.array([p[0] for p in pairs])
        j = jnp.array([p[1] for p in pairs])
        d = np.asarray(collision.pair_directions(dir_key, i, j, DIM))
        return {p: d[k] for k, p in enumerate(pairs)}

    return directions


DIM = 5


@pytest.mark.parametrize("threshold, include_self", [(None, True), (0.0, True), (None, False)])
@pytest.mark.parametrize("seed", [0, 1])
def test_soft_matches_reference(seed, threshold, include_self):
    w, g = _random_wg(seed, 7, DIM)
    out, info = collision.soft_collide(w, g, 0.2, threshold=threshold, include_self=include_self)
    ref = reference.soft(w, g, 0.2, threshold, include_self)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)
    s = reference.cos_matrix(w) * reference.cos_matrix(g)
    if threshold is not None:
        s[s < threshold] = 0
    expected_pairs = int(np.sum(np.triu(s != 0, 1)))
    assert int(info.num_pairs) == expected_pairs
    np.testing.assert_allclose(float(info.rate), expected_pairs / 21, rtol=1e-6)


@pytest.mark.parametrize("seed, coef", [(0, 0.1), (1, 0.3), (2, 0.6), (3, 1.0)])
def test_hard_paper_matches_reference(seed, coef):
    w, g = _random_wg(seed, 9, DIM, w_scale=0.02)
    key = jax.random.key(seed + 10)
    out, info = collision.hard_collide(w, g, key, coef)
    ref, pairs = reference.hard_paper(w, g, coef, _directions_from(key))
    assert int(info.num_pairs) == len(pairs)
    assert len(pairs) > 0
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


def test_hard_acceptance_matches_reference_with_length_scale():
    w, g = _random_wg(4, 12, DIM, w_scale=1.0)
    for ell in (1.0, 20.0):
        for coef in (0.05, 0.2, 0.5):
            acc = np.asarray(collision.acceptance_matrix(w, g, coef, ell))
            got = sorted(zip(*np.nonzero(acc), strict=True))
            assert got == reference.hard_accept(w, g, coef, ell)


def test_hard_conserves_momentum_and_pair_energy():
    w, g = _random_wg(5, 16, 8, w_scale=0.05)
    out, info = collision.hard_collide(w, g, jax.random.key(0), 0.5)
    assert int(info.num_pairs) > 5
    # Total momentum (sum of the particles' gradients) is unchanged by Eq. 6-8.
    np.testing.assert_allclose(np.asarray(out).sum(0), g.sum(0), atol=1e-4)


def test_hard_single_pair_is_elastic():
    # With one colliding pair, the pair's kinetic energy is conserved (hard spheres)
    # and the relative speed keeps its magnitude.
    w = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.02, 0.0]], np.float32)
    g = np.array([[1.0, 0.0, 0.0], [-1.0, 0.5, 0.0], [0.9, 0.1, 0.0]], np.float32)
    out, info = collision.hard_collide(w, g, jax.random.key(3), 0.05)
    assert int(info.num_pairs) == 1
    out = np.asarray(out)
    np.testing.assert_allclose((out[:2] ** 2).sum(), (g[:2] ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(out[0] - out[1]), np.linalg.norm(g[0] - g[1]), rtol=1e-5
    )
    np.testing.assert_array_equal(out[2], g[2])


def test_hard_chunking_does_not_change_result():
    w, g = _random_wg(6, 20, DIM, w_scale=0.05)
    key = jax.random.key(1)
    full, info = collision.hard_collide(w, g, key, 0.7)
    assert int(info.num_pairs) > 10
    for chunk in (1, 3, 7, 1000):
        out, _ = collision.hard_collide(w, g, key, 0.7, chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(out), np.asarray(full), rtol=1e-5, atol=1e-5)


def _released_rand_vec(key, n, chnl):
    dir_key, _ = jax.random.split(key)
    i, j = np.triu_indices(n, 1)
    z = np.asarray(
        collision.pair_normals(dir_key, jnp.asarray(i), jnp.asarray(j), chnl, jnp.float32)
    )
    z = z.T.astype(np.float64)  # (chnl, num_pairs)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_hard_released_matches_torch_code_transcription():
    # coll_coef=1: every pair collides, so the code's normalisation of the random
    # vectors over all pairs is fully determined by the pair normals.
    n, chnl = 8, 4
    rng = np.random.default_rng(7)
    W = (rng.normal(size=(chnl, n)) * 0.5).astype(np.float32)  # PyTorch (out, in) layout
    grad = rng.normal(size=(chnl, n)).astype(np.float32)
    key = jax.random.key(11)
    ref = reference.hard_released_torch_layout(W, grad, 1.0, _released_rand_vec(key, n, chnl), 0.3)
    # particles = columns of W = rows of W.T (a Flax kernel is W.T).
    out, info = collision.hard_collide(W.T, grad.T, key, 1.0, rule="released", scale=0.3)
    assert int(info.num_pairs) == n * (n - 1) // 2
    np.testing.assert_allclose(np.asarray(out).T, ref, rtol=1e-4, atol=1e-5)


def test_hard_released_partial_acceptance_deterministic_part():
    # With few colliding pairs the scatter term is ~sqrt(chnl/num_pairs) small; the
    # deterministic part must match the code (pairs pushed apart).
    n, chnl = 10, 3
    rng = np.random.default_rng(8)
    W = (rng.normal(size=(chnl, n)) * 0.5).astype(np.float32)
    grad = rng.normal(size=(chnl, n)).astype(np.float32)
    out, info = collision.hard_collide(W.T, grad.T, jax.random.key(0), 0.3, rule="released")
    zero_noise = np.zeros((chnl, n * (n - 1) // 2))
    ref_det = reference.hard_released_torch_layout(W, grad, 0.3, zero_noise)
    assert 0 < int(info.num_pairs) < n * (n - 1) // 2
    # The residual is the scatter term: antisymmetric per pair, so it sums to 0.
    residual = np.asarray(out).T - ref_det
    np.testing.assert_allclose(residual.sum(1), 0.0, atol=1e-5)
    assert np.abs(residual).max() > 0
    # Per-component normalisation over all 45 pairs keeps it small.
    assert np.abs(residual).max() < 2.0 * np.abs(grad).max()


def test_pair_directions_are_unit_and_antisymmetric_use():
    key = jax.random.key(0)
    i = jnp.arange(50)
    j = jnp.arange(50) + 1
    d = collision.pair_directions(key, i, j, 7)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d), axis=1), 1.0, rtol=1e-5)
    # Directions depend on the pair only.
    d2 = collision.pair_directions(key, i[::-1], j[::-1], 7)
    np.testing.assert_array_equal(np.asarray(d2)[::-1], np.asarray(d))


@pytest.mark.parametrize("fn", ["soft", "hard"])
def test_jit_equals_eager(fn):
    w, g = _random_wg(9, 11, DIM, w_scale=0.1)
    key = jax.random.key(2)
    if fn == "soft":
        f = lambda w, g: collision.soft_collide(w, g, 0.3)[0]  # noqa: E731
    else:
        f = lambda w, g: collision.hard_collide(w, g, key, 0.4)[0]  # noqa: E731
    jitted = np.asarray(jax.jit(f)(w, g))
    with jax.disable_jit():
        eager = np.asarray(f(w, g))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["paper", "released"])
def test_degenerate_inputs_stay_finite(rule):
    n, d = 6, 4
    rng = np.random.default_rng(0)
    w = rng.normal(size=(n, d)).astype(np.float32)
    cases = {
        "zero gradients": (w, np.zeros((n, d), np.float32)),
        "all-equal gradients": (w, np.ones((n, d), np.float32)),
        "all-equal weights": (
            np.ones((n, d), np.float32),
            rng.normal(size=(n, d)).astype(np.float32),
        ),
        "zero weights": (np.zeros((n, d), np.float32), rng.normal(size=(n, d)).astype(np.float32)),
    }
    for name, (w_, g_) in cases.items():
        for coef in (0.0, 0.5, 1.0):
            out_h, _ = collision.hard_collide(w_, g_, jax.random.key(0), coef, rule=rule)
            out_s, _ = collision.soft_collide(w_, g_, coef)
            assert np.all(np.isfinite(np.asarray(out_h))), name
            assert np.all(np.isfinite(np.asarray(out_s))), name
        if name.startswith(("zero grad", "all-equal grad")):
            # g_r^max = 0: no pair collides, the gradient is unchanged.
            out_h, info = collision.hard_collide(w_, g_, jax.random.key(0), 1.0, rule=rule)
            np.testing.assert_array_equal(np.asarray(out_h), g_)
            assert int(info.num_pairs) == 0


def test_zero_coef_is_identity():
    w, g = _random_wg(1, 8, DIM)
    out_h, info = collision.hard_collide(w, g, jax.random.key(0), 0.0)
    np.testing.assert_array_equal(np.asarray(out_h), g)
    assert int(info.num_pairs) == 0
    out_s, _ = collision.soft_collide(w, g, 0.0)
    np.testing.assert_array_equal(np.asarray(out_s), g)


def test_single_particle_is_noop():
    w = np.ones((1, 3), np.float32)
    g = np.arange(3, dtype=np.float32)[None]
    out, info = collision.hard_collide(w, g, jax.random.key(0), 1.0)
    np.testing.assert_array_equal(np.asarray(out), g)
    assert float(info.rate) == 0.0
    out_s, _ = collision.soft_collide(w, g, 0.1)
    np.testing.assert_allclose(np.asarray(out_s), 0.9 * g, rtol=1e-6)


def test_bad_inputs_raise_clear_errors():
    w = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        collision.soft_collide(w, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        collision.hard_collide(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4)), jax.random.key(0))
    with pytest.raises(TypeError, match="floating point"):
        collision.soft_collide(w, jnp.ones((4, 3), jnp.int32))
    with pytest.raises(ValueError, match="rule"):
        collision.hard_collide(w, w, jax.random.key(0), rule="torch")
    with pytest.raises(ValueError, match="chunk_size"):
        collision.hard_collide(w, w, jax.random.key(0), chunk_size=0)


@pytest.mark.parametrize(
    "shape, axis", [((3, 4), -1), ((3, 4), 0), ((2, 3, 5, 4), -1), ((2, 3, 5, 4), 2)]
)
def test_particle_layout_round_trip(shape, axis):
    x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    p = collision.as_particles(x, axis)
    assert p.shape == (shape[axis], x.size // shape[axis])
    # Particle k is the slice x[..., k, ...] along `axis`.
    np.testing.assert_array_equal(np.asarray(p[1]), np.take(np.asarray(x), 1, axis=axis).ravel())
    np.testing.assert_array_equal(
        np.asarray(collision.from_particles(p, shape, axis)), np.asarray(x)
    )


def test_pairwise_distance_accuracy():
    # Nearly-equal, large-offset rows: centring keeps the Gram-matrix formula exact enough.
    rng = np.random.default_rng(0)
    x = (100.0 + rng.normal(size=(10, 6)) * 1e-2).astype(np.float32)
    ref = np.linalg.norm(x[:, None].astype(np.float64) - x[None].astype(np.float64), axis=-1)
    np.testing.assert_allclose(
        np.asarray(collision.pairwise_distance(x)), ref, rtol=2e-3, atol=2e-4
    )


def test_bfloat16_inputs_keep_dtype():
    w, g = _random_wg(2, 6, DIM, 0.1)
    w16, g16 = jnp.asarray(w, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16)
    out, _ = collision.hard_collide(w16, g16, jax.random.key(0), 0.5)
    assert out.dtype == jnp.bfloat16
    out_s, _ = collision.soft_collide(w16, g16, 0.5)
    assert out_s.dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e19, 1e30])
def test_extreme_gradient_scales_collide_like_unit_scale(dtype, scale):
    # Issue 10 case 5: before, |g| ~1e-20 collided 0 pairs and |g| ~1e19 gave NaN.
    w, g = _random_wg(4, 64, 32, 0.05)
    key = jax.random.key(0)
    g_big = jnp.asarray(g * scale, dtype)
    g_unit = (g_big.astype(jnp.float32) / scale).astype(jnp.float32)  # same rounding
    h, info = collision.hard_collide(w, g_big, key, 0.5)
    h1, info1 = collision.hard_collide(w, g_unit, key, 0.5)
    assert int(info1.num_pairs) > 0 and int(info.num_pairs) == int(info1.num_pairs)
    assert bool(jnp.all(jnp.isfinite(h)))
    tol = 2.0**-7 if dtype == jnp.bfloat16 else 1e-5  # bfloat16: one ulp at the max
    ref = np.abs(np.asarray(h1)).max()
    np.testing.assert_allclose(np.asarray(h, np.float64) / scale, h1, atol=tol * ref)
    s, _ = collision.soft_collide(w, g_big, 0.5)
    s1, _ = collision.soft_collide(w, g_unit, 0.5)
    ref = np.abs(np.asarray(s1)).max()
    np.testing.assert_allclose(np.asarray(s, np.float64) / scale, s1, atol=tol * ref)


def test_extreme_weight_scales_stay_finite():
    w, g = _random_wg(5, 16, 8)
    for s in (1e-30, 1e30):
        for out, _ in (
            collision.hard_collide(w * s, g, jax.random.key(0), 1.0),
            collision.soft_collide(w * s, g, 0.5),
        ):
            assert bool(jnp.all(jnp.isfinite(out)))
    # Soft collision is invariant to the weights' scale (cosines only).
    a, _ = collision.soft_collide(w * 1e-30, g, 0.5)
    b, _ = collision.soft_collide(w, g, 0.5)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_nonfinite_inputs_pass_through_without_collisions():
    w, g = _random_wg(6, 8, 4)
    g_bad = g.copy()
    g_bad[0, 0] = np.nan
    w_bad = w.copy()
    w_bad[1, 1] = np.inf
    for ww, gg in ((w, g_bad), (w_bad, g)):
        out, info = collision.hard_collide(ww, gg, jax.random.key(0), 1.0)
        np.testing.assert_array_equal(np.asarray(out), gg)
        assert int(info.num_pairs) == 0
        out, info = collision.soft_collide(ww, gg, 0.5)
        np.testing.assert_array_equal(np.asarray(out), gg)
        assert int(info.num_pairs) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coll_coef": float("inf")}, "finite"),
        ({"coll_coef": np.float32(5)}, r"\[0, 1\]"),
        ({"coll_coef": np.float32(-1)}, r"\[0, 1\]"),
        ({"coll_coef": jnp.float32(float("nan"))}, "finite"),
        ({"length_scale": -1.0}, "length_scale"),
        ({"length_scale": np.float64(0.0)}, "length_scale"),
        ({"scale": float("nan")}, "scale"),
        ({"chunk_size": 2.5}, "chunk_size"),
    ],
)
def test_hard_hyperparameters_are_validated(kwargs, match):
    w = jnp.ones((4, 3))
    kwargs = {"coll_coef": 0.5} | kwargs
    coef = kwargs.pop("coll_coef")
    with pytest.raises((ValueError, TypeError), match=match):
        collision.hard_collide(w, w, jax.random.key(0), coef, **kwargs)


@pytest.mark.parametrize("coef", [float("inf"), np.float32(-1), True, "0.1"])
def test_soft_hyperparameters_are_validated(coef):
    with pytest.raises((ValueError, TypeError), match="coll_coef"):
        collision.soft_collide(jnp.ones((4, 3)), jnp.ones((4, 3)), coef)


@pytest.mark.parametrize("shape", [(10, 0), (0, 10), (0, 3, 4), (2, 0, 4)])
def test_zero_size_arrays_become_empty_particle_sets(shape):
    # Issue 10 case 7: before, as_particles((10, 0)) raised ZeroDivisionError.
    x = jnp.zeros(shape)
    for axis in range(len(shape)):
        p = collision.as_particles(x, axis)
        assert p.shape == (
            shape[axis],
            0 if shape[axis] else int(np.prod(shape[:axis] + shape[axis + 1 :])),
        )
        assert collision.from_particles(p, shape, axis).shape == shape


def _lecun_kernel_and_grad(shape, seed=0):
    # A Flax Dense kernel and the gradient of a least-squares loss on a batch of 64.
    kw, kx, kt = jax.random.split(jax.random.key(seed), 3)
    w = jax.nn.initializers.lecun_normal()(kw, shape)
    x = jax.random.normal(kx, (64, shape[0]))
    y = x @ jax.nn.initializers.lecun_normal()(kt, shape)
    g = jax.grad(lambda w: 0.5 * jnp.mean(jnp.sum((x @ w - y) ** 2, -1)))(w)
    return w, g


COEFS = np.linspace(0.0, 1.0, 21)


@pytest.mark.parametrize(
    "acceptance, ell", [("threshold", 1.0), ("threshold", 20.0), ("quota", "mean")]
)
def test_pairs_grow_monotonically_with_coll_coef(acceptance, ell):
    w, g = _lecun_kernel_and_grad((512, 100))
    wp, gp = collision.as_particles(w), collision.as_particles(g)
    count = jax.jit(lambda c: jnp.sum(collision.acceptance_matrix(wp, gp, c, ell, acceptance)))
    pairs = np.array([int(count(c)) for c in COEFS])
    assert (np.diff(pairs) >= 0).all(), pairs
    if acceptance == "quota":
        # ceil(c N / 2) pairs: c is the mean number of collisions per particle.
        np.testing.assert_array_equal(pairs, np.ceil(COEFS * 100 / 2 - 1e-9).astype(int))


@pytest.mark.parametrize("shape", [(512, 10), (512, 100), (2048, 100)])
def test_quota_rule_is_independent_of_the_weights_and_gradients_scale(shape):
    # The same pairs collide when the weights or the gradient are scaled by 10 or 0.1.
    w, g = _lecun_kernel_and_grad(shape)
    wp, gp = collision.as_particles(w), collision.as_particles(g)
    ref = np.asarray(collision.acceptance_matrix(wp, gp, 0.3, "mean", "quota"))
    assert ref.sum() > 0
    for sw, sg in ((10.0, 1.0), (0.1, 1.0), (1.0, 10.0), (1.0, 0.1)):
        acc = np.asarray(collision.acceptance_matrix(wp * sw, gp * sg, 0.3, "mean", "quota"))
        assert (acc != ref).sum() <= 2, (sw, sg, (acc != ref).sum())  # rounding at the cut
