"""Tests of kinetix.diffusion and kinetix.nn.diffusion (graph-heat diffusion, COIN / Diff-ResNet).

The ground truth for the graph construction is an independent NumPy
transcription of the authors' released code (float64, loops), kept in this
file: ``calculate_weight`` of ``fewshot/utils.py`` (Diff-ResNet and COIN) and
of ``synthetic/two_moon_example.py`` (Diff-ResNet).

Which Laplacian conserves what (``x`` of shape ``(N, F)``, per column):

* ``D - W`` and the code's ``diag(W~ 1) - W~``: ``1^T L = 0``, so the plain
  sum / mean of ``x`` is conserved.
* ``L_sym = I - D^-1/2 W D^-1/2``: ``(D^1/2 1)^T L_sym = 0``, so the
  ``sqrt(d)``-weighted sum is conserved; the plain mean is not, in general.
* ``L_rw = I - D^-1 W`` (symmetric ``W``): ``1^T D L_rw = 0``, so the
  degree-weighted sum is conserved.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.experimental import sparse as jsparse

from kinetix import diffusion
from kinetix.nn import diffusion as nn_diffusion
from kinetix.nn.diffusion import DiffusionLayer

# --------------------------------------------- NumPy transcription of the released code


def ref_distance(x):
    """torch.norm(inputs.unsqueeze(0) - inputs.unsqueeze(1), dim=-1)."""
    n = len(x)
    return np.array([[np.linalg.norm(x[j] - x[i]) for j in range(n)] for i in range(n)])


def ref_calculate_weight(x, n_top, sigma):
    """fewshot/utils.py::calculate_weight (both repositories), line by line."""
    distance = ref_distance(np.asarray(x, np.float64))
    n = len(distance)
    weight = np.zeros((n, n))
    for i in range(n):
        row = np.sort(distance[i])
        dist_n_top = row[n_top - 1]  # torch.kthvalue(distance, n_top, dim=1): 1-based
        dist_sigma = row[sigma - 1]
        for j in range(n):
            truncated = distance[i, j] if distance[i, j] < dist_n_top else np.inf
            weight[i, j] = np.exp(-((truncated / dist_sigma) ** 2))
    d_inv_sqrt = np.diag(weight.sum(axis=1) ** -0.5)
    weight = d_inv_sqrt @ weight @ d_inv_sqrt
    return (weight + weight.T) / 2


def ref_code_laplacian(weight):
    """COIN fewshot/train.py: laplacian = diag(weight.sum(1)) - weight."""
    return np.diag(weight.sum(axis=1)) - weight


def ref_two_moon_weight(x, sigma=0.5, n_top=25):
    """synthetic/two_moon_example.py::calculate_weight (the toy script), line by line."""
    x = np.asarray(x, np.float64)
    n = len(x)
    weight = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            weight[i, j] = np.exp(-(np.sum((x[i] - x[j]) ** 2)) / sigma**2)
    for i in range(n):
        idx = np.argpartition(weight[i], -n_top)[:-n_top]
        weight[i, idx] = 0.0
        weight[i] /= weight[i].sum()
    return weight


def ref_textbook(w, kind):
    """Textbook Laplacians of a symmetric W, loops (Chung's convention for isolated nodes)."""
    n = len(w)
    d = w.sum(axis=1)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if kind == "unnormalized":
                out[i, j] = (d[i] if i == j else 0.0) - w[i, j]
            elif kind == "symmetric":
                if d[i] > 0 and d[j] > 0:
                    out[i, j] = (1.0 if i == j else 0.0) - w[i, j] / np.sqrt(d[i] * d[j])
            else:  # random_walk
                if d[i] > 0:
                    out[i, j] = (1.0 if i == j else 0.0) - w[i, j] / d[i]
    return out


# --------------------------------------------------------------------- fixtures


def _points(n=40, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def pts():
    return _points()


# ------------------------------------------------------------------ graph build


def test_pairwise_distances_and_knn_match_numpy(pts):
    d = np.asarray(diffusion.pairwise_distances(pts))
    ref = ref_distance(pts.astype(np.float64))
    np.testing.assert_allclose(d, ref, atol=2e-5)
    assert np.all(np.diag(d) == 0.0)
    adj = np.asarray(diffusion.knn_graph(pts, 5))
    ref_d = ref + np.diag(np.full(len(ref), np.inf))
    expected = np.zeros_like(adj)
    for i, row in enumerate(ref_d):
        expected[i, np.argsort(row, kind="stable")[:5]] = True
    np.testing.assert_array_equal(adj, expected)
    assert adj.sum(axis=1).tolist() == [5] * len(pts) and not adj.diagonal().any()


@pytest.mark.parametrize("n_top,sigma", [(8, 4), (5, 3), (12, 6)])
def test_released_code_kernel_and_laplacian_match_transcription(pts, n_top, sigma):
    w_ref = ref_calculate_weight(pts, n_top, sigma)
    lap = diffusion.graph_laplacian(pts, n_top, sigma, normalization="released_code")
    np.testing.assert_allclose(np.asarray(lap), ref_code_laplacian(w_ref), atol=2e-5)
    # The raw kernel: at most n_top - 1 entries per row (self included), W_ii = 1.
    w = np.asarray(diffusion.kernel_weights(pts, n_top, sigma))
    assert (w > 0).sum(axis=1).max() <= n_top - 1
    np.testing.assert_array_equal(np.diag(w), 1.0)


def test_toy_two_moon_kernel_matches_transcription():
    x = _points(40, 2, seed=3)
    w = diffusion.kernel_weights(x, 25, fixed_bandwidth=0.5, truncation="knn")
    lap = diffusion.laplacian(w, "random_walk")  # the toy script's I - W_row_normalised
    ref = np.eye(40) - ref_two_moon_weight(x, sigma=0.5, n_top=25)
    np.testing.assert_allclose(np.asarray(lap), ref, atol=2e-5)


@pytest.mark.parametrize("kind", ["unnormalized", "symmetric", "random_walk"])
def test_textbook_laplacians_match_reference(pts, kind):
    w = np.asarray(diffusion.symmetrize(diffusion.kernel_weights(pts)))
    np.testing.assert_allclose(w, w.T, atol=0)
    lap = diffusion.graph_laplacian(pts, normalization=kind)
    np.testing.assert_allclose(np.asarray(lap), ref_textbook(w.astype(np.float64), kind), atol=2e-5)


def test_options_and_local_scaling(pts):
    w = np.asarray(diffusion.kernel_weights(pts, 8, 4, bandwidth="local_scaling"))
    d = ref_distance(pts.astype(np.float64))
    s = np.sort(d, axis=1)[:, 3]
    keep = d < np.sort(d, axis=1)[:, 7:8]
    np.fill_diagonal(keep, True)
    ref = np.where(keep, np.exp(-(d**2) / np.outer(s, s)), 0.0)
    np.testing.assert_allclose(w, ref, atol=2e-6)
    wk = np.asarray(diffusion.kernel_weights(pts, 8, 4, truncation="knn", self_loops=False))
    assert (wk > 0).sum(axis=1).tolist() == [7] * len(pts) and not wk.diagonal().any()
    mx, mn = diffusion.symmetrize(wk, "max"), diffusion.symmetrize(wk, "min")
    assert bool(jnp.all(mx >= mn)) and bool(jnp.all(mx == mx.T)) and bool(jnp.all(mn == mn.T))


def test_isolated_nodes_and_duplicates_are_finite():
    # Duplicated points: the code's strict cut-off (and sigma-th distance) is 0.
    x = np.concatenate([_points(20, 2), np.zeros((6, 2), np.float32)])
    configs = [(n, True) for n in diffusion.NORMALIZATIONS] + [("symmetric", False)]
    for norm, self_loops in configs:
        lap = diffusion.graph_laplacian(
            x, n_top=3, sigma=2, normalization=norm, self_loops=self_loops
        )
        assert np.all(np.isfinite(np.asarray(lap))), (norm, self_loops)

    def energy(z):
        total = 0.0
        for norm, self_loops, bandwidth in (
            ("symmetric", False, "row"),
            ("released_code", True, "local_scaling"),
        ):
            lap = diffusion.graph_laplacian(
                z, 3, 2, normalization=norm, self_loops=self_loops, bandwidth=bandwidth
            )
            total = total + diffusion.dirichlet_energy(z, lap)
        return total

    grad = jax.jit(jax.grad(energy))(x)
    assert np.all(np.isfinite(np.asarray(grad)))
    # An isolated node has a zero row and column and keeps its value.
    w = np.ones((4, 4), np.float32) - np.eye(4, dtype=np.float32)
    w[3, :] = w[:, 3] = 0.0
    for norm in ("unnormalized", "symmetric", "random_walk", "released_code"):
        lap = np.asarray(diffusion.laplacian(w, norm))
        assert np.all(np.isfinite(lap)) and not lap[3].any() and not lap[:, 3].any()
    u = diffusion.diffuse(np.arange(8.0).reshape(4, 2), diffusion.laplacian(w), 0.5, 3)
    np.testing.assert_array_equal(np.asarray(u)[3], [6.0, 7.0])


# ---------------------------------------------------------- invariants and energy


def _diffusion_setup(pts, norm):
    lap = diffusion.graph_laplacian(pts, normalization=norm)
    if norm == "random_walk":
        lam = float(diffusion.lambda_max(diffusion.graph_laplacian(pts)))  # same spectrum as L_sym
    else:
        lam = float(diffusion.lambda_max(lap))
    return lap, lam


def test_conserved_quantities(pts):
    u = np.random.default_rng(1).normal(size=(len(pts), 3)).astype(np.float32)
    w = np.asarray(diffusion.symmetrize(diffusion.kernel_weights(pts)), np.float64)
    deg = w.sum(axis=1)
    weights = {
        "unnormalized": np.ones_like(deg),
        "released_code": np.ones_like(deg),
        "symmetric": np.sqrt(deg),
        "random_walk": deg,
    }
    for norm, c in weights.items():
        lap, lam = _diffusion_setup(pts, norm)
        v = np.asarray(diffusion.diffuse(u, lap, 0.9 * 2.0 / lam, 25), np.float64)
        np.testing.assert_allclose(c @ v, c @ u, rtol=1e-4, atol=1e-4, err_msg=norm)
    # L_sym does not conserve the plain mean on an irregular graph.
    lap, lam = _diffusion_setup(pts, "symmetric")
    v = np.asarray(diffusion.diffuse(u, lap, 0.9, 25))
    assert np.max(np.abs(v.mean(0) - u.mean(0))) > 1e-3
    # D~ - W~ (COIN's released Laplacian) keeps softmax rows summing to 1.
    probs = jax.nn.softmax(jnp.asarray(u))
    lap = diffusion.graph_laplacian(pts, normalization="released_code")
    out = diffusion.diffuse(probs, lap, 0.35, 20)
    np.testing.assert_allclose(np.asarray(out).sum(1), 1.0, atol=1e-5)
    assert float(out.min()) >= 0.0


@pytest.mark.parametrize("norm", ["unnormalized", "symmetric", "released_code"])
def test_dirichlet_energy_decreases_within_bound(pts, norm):
    lap, lam = _diffusion_setup(pts, norm)
    u = jnp.asarray(np.random.default_rng(2).normal(size=(len(pts), 4)), jnp.float32)
    for frac in (0.25, 0.99, 1.0):
        gamma = frac * 2.0 / lam
        e = [float(diffusion.dirichlet_energy(u, lap))]
        v = u
        for _ in range(15):
            v = diffusion.diffusion_step(v, lap, gamma, lam_max=lam)
            e.append(float(diffusion.dirichlet_energy(v, lap)))
        e = np.array(e)
        assert np.all(np.diff(e) <= 1e-5 * e[0]), (norm, frac, e)
        if frac < 1.0:
            assert e[-1] < 0.9 * e[0]
    if norm == "unnormalized":  # E = 1/2 sum_ij W_ij |u_i - u_j|^2
        w = np.asarray(diffusion.symmetrize(diffusion.kernel_weights(pts)), np.float64)
        un = np.asarray(u, np.float64)
        diff2 = ((un[:, None] - un[None]) ** 2).sum(-1)
        np.testing.assert_allclose(
            float(diffusion.dirichlet_energy(u, lap)), 0.5 * (w * diff2).sum(), rtol=1e-4
        )


def test_random_walk_decreases_degree_weighted_energy(pts):
    lap = diffusion.graph_laplacian(pts, normalization="random_walk")
    lap_un = diffusion.graph_laplacian(pts, normalization="unnormalized")
    u = jnp.asarray(np.random.default_rng(3).normal(size=(len(pts), 2)), jnp.float32)
    e = [float(diffusion.dirichlet_energy(u, lap_un))]
    for _ in range(10):
        u = diffusion.diffusion_step(u, lap, 1.0)  # Gershgorin bound of L_rw <= 2
        e.append(float(diffusion.dirichlet_energy(u, lap_un)))
    assert np.all(np.diff(e) <= 1e-5 * e[0])


def test_normalised_spectrum_bounded(pts):
    for norm in ("symmetric",):
        lam = float(diffusion.lambda_max(diffusion.graph_laplacian(pts, normalization=norm)))
        assert 0.0 < lam <= 2.0 + 1e-5
    assert diffusion.max_stable_gamma(diffusion.graph_laplacian(pts)) >= 1.0 - 1e-5
    lap = diffusion.graph_laplacian(pts, normalization="unnormalized")
    assert float(diffusion.gershgorin_bound(lap)) >= float(diffusion.lambda_max(lap)) - 1e-5


# ------------------------------------------------------------- stability check


def test_unstable_step_is_refused(pts):
    lap, lam = _diffusion_setup(pts, "unnormalized")
    u = np.ones((len(pts), 2), np.float32)
    gamma = 1.05 * 2.0 / lam
    for fn in (
        lambda: diffusion.diffuse(u, lap, gamma, 5),
        lambda: diffusion.diffusion_step(u, lap, gamma),
        lambda: diffusion.check_stability(lap, gamma),
        lambda: diffusion.diffuse(u, lap, 1.0, 5, lam_max=lam),
    ):
        with pytest.raises(ValueError, match=r"gamma \* lambda_max\(L\) <= 2") as err:
            fn()
        assert "Use gamma <=" in str(err.value) and "normalised Laplacian" in str(err.value)
    assert f"{lam:.6g}" in str(
        pytest.raises(ValueError, diffusion.check_stability, lap, gamma).value
    )
    # Within the bound: accepted (the Gershgorin bound alone would refuse it).
    assert float(diffusion.gershgorin_bound(lap)) * 0.99 * 2.0 / lam > 2.0
    diffusion.diffuse(u, lap, 0.99 * 2.0 / lam, 3)
    with pytest.raises(ValueError, match="Gershgorin"):
        diffusion.check_stability(lap, 0.99 * 2.0 / lam, method="gershgorin")
    with pytest.raises(ValueError, match="finite number >= 0"):
        diffusion.diffuse(u, lap, -0.1, 1)
    # The unchecked iteration does blow up, which is what the check prevents.
    rng = np.random.default_rng(4)
    v = diffusion.diffuse(rng.normal(size=(len(pts), 2)), lap, gamma, 300, check="none")
    assert float(jnp.max(jnp.abs(v))) > 1e3
    # check="clip" caps gamma at 2 / Gershgorin bound, stays bounded.
    v = diffusion.diffuse(rng.normal(size=(len(pts), 2)), lap, 10.0, 300, check="clip")
    assert float(jnp.max(jnp.abs(v))) < 10.0


def test_jit_paths_and_traced_error(pts):
    lap = diffusion.graph_laplacian(pts)
    u = np.random.default_rng(5).normal(size=(len(pts), 3)).astype(np.float32)
    eager = diffusion.diffuse(u, lap, 0.8, 7)
    jitted = jax.jit(lambda a, b: diffusion.diffuse(a, b, 0.8, 7, lam_max=2.0))(u, lap)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)
    clipped = jax.jit(lambda a, b, g: diffusion.diffuse(a, b, g, 7, check="clip", lam_max=2.0))(
        u, lap, 0.8
    )
    np.testing.assert_allclose(np.asarray(clipped), np.asarray(eager), atol=1e-6)
    # A concrete L closed over by jit is still checked.
    closed = jax.jit(lambda a: diffusion.diffuse(a, lap, 0.8, 7))(u)
    np.testing.assert_allclose(np.asarray(closed), np.asarray(eager), atol=1e-6)
    with pytest.raises(ValueError, match="L is traced"):
        jax.jit(lambda a, b: diffusion.diffuse(a, b, 0.8, 7))(u, lap)
    with pytest.raises(ValueError, match="gamma is traced"):
        jax.jit(lambda a, g: diffusion.diffuse(a, lap, g, 7))(u, 0.8)
    # Graph construction under jit matches eager.
    lap_j = jax.jit(lambda p: diffusion.graph_laplacian(p, normalization="released_code"))(pts)
    lap_e = diffusion.graph_laplacian(pts, normalization="released_code")
    np.testing.assert_allclose(np.asarray(lap_j), np.asarray(lap_e), atol=1e-6)
    # Sparse (BCOO) Laplacian gives the same result.
    sparse = jsparse.BCOO.fromdense(lap)
    np.testing.assert_allclose(
        np.asarray(diffusion.diffuse(u, sparse, 0.8, 7)), np.asarray(eager), atol=1e-5
    )


def test_deterministic(pts):
    a = diffusion.diffuse(pts, diffusion.graph_laplacian(pts), 0.5, 4)
    b = diffusion.diffuse(pts, diffusion.graph_laplacian(pts), 0.5, 4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_inputs_give_clear_errors(pts):
    lap = diffusion.graph_laplacian(pts)
    n = len(pts)
    cases = [
        (lambda: diffusion.graph_laplacian(pts[0]), "2-D array"),
        (lambda: diffusion.graph_laplacian(pts[:1]), "at least 2 points"),
        (lambda: diffusion.knn_graph(pts, n), f"Use k <= {n - 1}"),
        (lambda: diffusion.kernel_weights(pts, n + 1), f"Use n_top <= {n}"),
        (lambda: diffusion.kernel_weights(pts, 8, n + 1), "sigma"),
        (lambda: diffusion.kernel_weights(pts, 8, 1), "sigma=1"),
        (lambda: diffusion.kernel_weights(pts, 1), "n_top must be >= 2"),
        (lambda: diffusion.graph_laplacian(pts, normalization="sym"), "normalization"),
        (lambda: diffusion.graph_laplacian(pts, bandwidth="x"), "bandwidth"),
        (
            lambda: diffusion.graph_laplacian(
                pts, normalization="released_code", symmetrize_mode="max"
            ),
            "symmetrize_mode='mean'",
        ),
        (lambda: diffusion.diffuse(pts[:5], lap, 0.5), "leading dimension"),
        (lambda: diffusion.diffuse(pts, lap[:, :5], 0.5), "square"),
        (lambda: diffusion.diffuse(pts, lap, 0.5, -1), "steps must be >= 0"),
        (lambda: diffusion.diffuse(pts, lap, 0.5, check="maybe"), "check"),
        (lambda: diffusion.laplacian(-np.ones((3, 3))), "non-negative"),
        (lambda: diffusion.lambda_max(lap, "power"), "method"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()
    with pytest.raises(TypeError, match="Python int"):
        diffusion.diffuse(pts, lap, 0.5, 2.0)
    bad = pts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        diffusion.graph_laplacian(bad)
    with pytest.raises(ValueError, match="non-finite"):
        diffusion.diffuse(bad, lap, 0.5)


# ------------------------------------------- stability of non-symmetric Laplacians


def _directed_cycle_laplacian(n=5):
    """D - W of the directed cycle i -> i + 1: I - P, eigenvalues 1 - exp(2 pi i k / n)."""
    w = np.roll(np.eye(n, dtype=np.float32), 1, axis=1)
    return np.asarray(diffusion.laplacian(w, "unnormalized"))


def _growth(lap, gamma, steps, seed=0):
    """max |x_T| / max |x_0| of the unchecked iteration, and the per-step 2-norms."""
    x0 = np.random.default_rng(seed).normal(size=(len(lap), 2)).astype(np.float32)
    xt = np.asarray(diffusion.diffuse(x0, lap, gamma, steps, check="none"))
    return float(np.abs(xt).max() / np.abs(x0).max())


def test_nonsymmetric_laplacian_with_complex_eigenvalues_is_checked_by_modulus():
    """Explicit Euler is stable iff |1 - gamma lambda| <= 1 for every eigenvalue, i.e.
    gamma |lambda|^2 <= 2 Re(lambda); gamma * max Re(lambda) <= 2 is not enough."""
    lap = _directed_cycle_laplacian(5)
    eig = np.linalg.eigvals(lap.astype(np.float64))
    assert np.abs(eig.imag).max() > 0.5  # complex spectrum
    gamma = 1.05
    # the former criterion accepted it: gamma * max Re(lambda) = 1.9 <= 2 ...
    assert gamma * eig.real.max() <= 2.0
    # ... but |1 - gamma lambda| > 1 for some eigenvalue, and the iteration grows
    assert np.abs(1 - gamma * eig).max() > 1.05
    assert _growth(lap, gamma, 100) > 100.0
    for fn in (
        lambda: diffusion.check_stability(lap, gamma),
        lambda: diffusion.diffuse(np.ones((5, 2), np.float32), lap, gamma, 3),
        lambda: DiffusionLayer(gamma, 3, laplacian=lap),
    ):
        with pytest.raises(ValueError, match=r"\|1 - gamma lambda\| <= 1 for every eigenvalue"):
            fn()
    # 2 Re(lambda) / |lambda|^2 = 1 for every eigenvalue of I - P: gamma <= 1
    assert diffusion.max_stable_gamma(lap) == pytest.approx(1.0, rel=1e-6)
    # a stable non-symmetric case is accepted and does not grow (I - P is normal: the
    # 2-norm of x never increases)
    gamma = 0.95
    assert diffusion.check_stability(lap, gamma) == pytest.approx(2.0, rel=1e-5)
    x = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    norms = [np.linalg.norm(x)]
    for _ in range(50):
        x = np.asarray(diffusion.diffuse(x, lap, gamma, 100))
        norms.append(np.linalg.norm(x))
    assert np.all(np.diff(norms) <= 1e-6 * norms[0])  # 5000 steps, never growing
    # the column sums are conserved by D - W (1^T L = 0 for the cycle: in- = out-degree)
    np.testing.assert_allclose(x.sum(0), np.asarray(diffusion.diffuse(x, lap, 0.5, 1)).sum(0))


def test_nonsymmetric_check_without_diagonal_dominance():
    """Gershgorin's bound on the spectral radius does not prove stability of a non-symmetric L:
    eigenvalues 0.1 +- i lie within radius 1.1, yet gamma = 1.5 grows (|1 - 1.5 lambda| = 1.58)."""
    lap = np.array([[0.1, -1.0], [1.0, 0.1]], np.float32)
    gamma = 1.5
    assert gamma * float(diffusion.gershgorin_bound(lap)) <= 2.0  # the former fast path
    assert _growth(lap, gamma, 40) > 1e6
    with pytest.raises(ValueError, match="Unstable diffusion step"):
        diffusion.check_stability(lap, gamma)
    with pytest.raises(ValueError, match="No Gershgorin bound"):
        diffusion.check_stability(lap, 0.01, method="gershgorin")
    assert diffusion.max_stable_gamma(lap) == pytest.approx(0.2 / 1.01, rel=1e-6)
    assert _growth(lap, 0.19, 2000) <= 1.0 + 1e-5  # within the bound: decays
    # check="clip" caps a concrete non-dominant L at its exact bound, and stays bounded
    # (L is normal: the 2-norm of x cannot grow, |1 - gamma lambda| = 1 at the cap)
    out = diffusion.diffuse(np.ones((2, 1), np.float32), lap, 10.0, 500, check="clip")
    assert float(jnp.linalg.norm(out)) <= np.sqrt(2.0) * (1 + 1e-4)
    # an eigenvalue with Re <= 0 admits no gamma > 0
    rot = np.array([[0.0, -1.0], [1.0, 0.0]], np.float32)
    assert diffusion.max_stable_gamma(rot) == 0.0
    with pytest.raises(ValueError, match=r"Re\(lambda\) <= 0"):
        diffusion.check_stability(rot, 1e-3)
    diffusion.check_stability(rot, 0.0)  # gamma = 0 is the identity


def test_graph_laplacian_without_symmetrisation_near_the_bound():
    """A kNN graph with symmetrize_mode='none' (D - W of the raw kernel): a gamma the former
    check accepted (gamma * max Re(lambda) <= 2) grows slowly; the new check refuses it."""
    x = np.random.default_rng(15).normal(size=(40, 3)).astype(np.float32)
    lap = diffusion.graph_laplacian(x, normalization="unnormalized", symmetrize_mode="none")
    eig = np.linalg.eigvals(np.asarray(lap, np.float64))
    old_bound, bound = 2.0 / eig.real.max(), diffusion.max_stable_gamma(lap)
    assert bound < old_bound
    gamma = 0.9999 * old_bound  # accepted before
    assert gamma > bound and gamma * eig.real.max() <= 2.0
    assert _growth(lap, gamma, 5000, seed=1) > 5.0  # measured about 15x
    with pytest.raises(ValueError, match="This L is not symmetric: lambda_eff"):
        diffusion.check_stability(lap, gamma)
    diffusion.check_stability(lap, 0.999 * bound)
    assert _growth(lap, 0.999 * bound, 5000, seed=1) < 5.0


def test_symmetric_laplacian_with_negative_eigenvalue_is_refused():
    lap = np.array([[1.0, 2.0], [2.0, 1.0]], np.float32)  # eigenvalues 3, -1: not a Laplacian
    with pytest.raises(ValueError, match=r"Re\(lambda\) <= 0"):
        diffusion.check_stability(lap, 0.1, method="exact")
    assert diffusion.max_stable_gamma(lap) == 0.0


# ------------------------------------------------------- hyper-parameter validation


def test_step_sizes_and_counts_are_validated(pts):
    lap = diffusion.graph_laplacian(pts)
    u = pts
    nan = float("nan")
    for gamma in (nan, np.float32(nan), jnp.float32(nan), float("inf"), -0.5, np.float32(-1)):
        for check in ("raise", "clip", "none"):
            with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
                diffusion.diffuse(u, lap, gamma, 2, check=check)
    for bad, msg in ((np.ones(2), "gamma must be a scalar"), (True, "real number")):
        with pytest.raises(ValueError, match=msg):
            diffusion.diffuse(u, lap, bad, 2, check="none")
    for lam in (nan, -1.0, np.float32(nan)):
        for check in ("raise", "clip"):
            with pytest.raises(ValueError, match="lam_max must be a number >= 0"):
                diffusion.diffuse(u, lap, 0.5, 2, lam_max=lam, check=check)
    # NumPy and JAX scalars work as Python numbers do
    want = np.asarray(diffusion.diffuse(u, lap, 0.5, 3))
    for gamma, steps in ((np.float32(0.5), np.int64(3)), (jnp.float32(0.5), jnp.int32(3))):
        np.testing.assert_allclose(np.asarray(diffusion.diffuse(u, lap, gamma, steps)), want)
    for steps in (2.0, True, np.float32(2), jnp.float32(2)):
        with pytest.raises(TypeError, match="steps must be a Python int"):
            diffusion.diffuse(u, lap, 0.5, steps)
    with pytest.raises(TypeError, match="k must be a Python int"):
        diffusion.knn_graph(pts, 2.5)
    with pytest.raises(TypeError, match="n_top must be a Python int"):
        diffusion.kernel_weights(pts, np.float64(8))
    # traced gamma: cannot be checked, must still be a scalar
    with pytest.raises(ValueError, match="gamma must be a scalar"):
        jax.jit(lambda g: diffusion.diffuse(u, lap, g, 2, check="none"))(jnp.ones(2))


def test_kernel_options_are_validated(pts):
    w = np.asarray(diffusion.kernel_weights(pts, 8, fixed_bandwidth=0.5))
    for fb in (np.float32(0.5), jnp.float32(0.5), np.float64(0.5)):
        np.testing.assert_allclose(
            np.asarray(diffusion.kernel_weights(pts, 8, fixed_bandwidth=fb)), w
        )
    for fb, msg in (
        (float("nan"), "finite number > 0"),
        (np.float32("inf"), "finite number > 0"),
        (0.0, "finite number > 0"),
        (np.float32(-1), "finite number > 0"),
        (True, "real number"),
        ("0.5", "real number"),
    ):
        with pytest.raises(ValueError, match=f"fixed_bandwidth must be a {msg}"):
            diffusion.kernel_weights(pts, 8, fixed_bandwidth=fb)
    with pytest.raises(ValueError, match="self_loops must be True or False"):
        diffusion.kernel_weights(pts, 8, self_loops="no")
    with pytest.raises(ValueError, match="method must be one of"):
        diffusion.check_stability(np.eye(3), 0.5, method=None)


_BAD_LAYER_ARGS = [
    (dict(gamma=float("nan")), "gamma must be a finite number"),
    (dict(gamma=np.float32("nan")), "gamma must be a finite number"),
    (dict(gamma=jnp.float32(float("inf"))), "gamma must be a finite number"),
    (dict(gamma=np.float32(-0.5)), "gamma must be a finite number >= 0"),
    (dict(gamma=True), "gamma must be a real scalar"),
    (dict(gamma=np.ones(2)), "gamma must be a real scalar"),
    (dict(steps=2.0), "steps must be an integer >= 0"),
    (dict(steps=np.int64(-1)), "steps must be an int >= 0"),
    (dict(steps=True), "steps must be an integer"),
    (dict(n_top=2.5), "n_top must be an integer >= 2"),
    (dict(n_top=1), "n_top must be an int >= 2"),
    (dict(sigma=np.float32(4)), "sigma must be an integer"),
    (dict(sigma=1), "sigma=1 selects"),
    (dict(fixed_bandwidth=float("nan")), "fixed_bandwidth must be a finite number"),
    (dict(fixed_bandwidth=np.float32(0)), "fixed_bandwidth must be > 0"),
    (dict(learnable_gamma=1), "learnable_gamma must be True or False"),
    (dict(self_loops="yes"), "self_loops must be True or False"),
    (dict(graph_gradients=None), "graph_gradients must be True or False"),
    (dict(learnable_gamma=True, max_gamma=np.float32("nan")), "max_gamma must be a finite"),
    (dict(learnable_gamma=True, max_gamma=-1.0), "max_gamma must be a finite number > 0"),
    (dict(learnable_gamma=True, param_dtype=jnp.int32), "param_dtype must be a float dtype"),
    (dict(param_dtype="not a dtype"), "param_dtype must be a float dtype"),
    (dict(check=["raise"]), "check must be one of"),
    (dict(laplacian=np.full((3, 3), np.nan, np.float32)), "non-finite"),
]


@pytest.mark.parametrize(("kw", "msg"), _BAD_LAYER_ARGS)
def test_layer_hyperparameters_are_validated(kw, msg):
    kw = {"gamma": 0.5, "steps": 2, **kw}
    with pytest.raises(ValueError, match=msg):
        DiffusionLayer(**kw)


def test_layer_accepts_numpy_and_jax_scalars(pts):
    layer = DiffusionLayer(np.float32(0.5), np.int64(3), n_top=np.int32(8), sigma=jnp.int32(4))
    ref = DiffusionLayer(0.5, 3)
    assert (layer.steps, layer.n_top, layer.sigma, layer.gamma_init) == (3, 8, 4, 0.5)
    np.testing.assert_allclose(np.asarray(layer(pts)), np.asarray(ref(pts)))
    learn = DiffusionLayer(jnp.float32(0.25), 2, learnable_gamma=True, max_gamma=np.float64(0.5))
    assert float(learn.gamma()) == pytest.approx(0.25) and learn.max_gamma == 0.5
    with pytest.raises(ValueError, match="gamma must be a concrete number"):
        jax.jit(lambda g: DiffusionLayer(g, 2).gamma())(0.5)


# ------------------------------------------------------------------- NNX layer


def test_layer_matches_functional_and_checks(pts):
    u = np.random.default_rng(6).normal(size=(len(pts), 3)).astype(np.float32)
    lap = diffusion.graph_laplacian(pts)
    layer = DiffusionLayer(0.5, 6)
    np.testing.assert_allclose(
        np.asarray(layer(u, graph_features=pts)),
        np.asarray(diffusion.diffuse(u, lap, 0.5, 6)),
        atol=1e-6,
    )
    # Per-batch normalised graph: checked without eigenvalues, works under nnx.jit.
    out = nnx.jit(lambda m, a: m(a))(layer, pts)
    assert out.shape == pts.shape and np.all(np.isfinite(np.asarray(out)))
    with pytest.raises(ValueError, match="lambda_max"):
        DiffusionLayer(1.5, 2)(pts)  # 1.5 * 2 > 2
    un = DiffusionLayer(0.5, 2, normalization="unnormalized")
    un(pts)  # concrete graph: exact check passes or raises eagerly
    with pytest.raises(ValueError, match="L is traced"):
        nnx.jit(lambda m, a: m(a))(un, pts)
    # A stored Laplacian is checked once, at construction.
    lap_un = diffusion.graph_laplacian(pts, normalization="unnormalized")
    with pytest.raises(ValueError, match="Unstable"):
        DiffusionLayer(1.1 * diffusion.max_stable_gamma(lap_un), 2, laplacian=lap_un)
    stored = DiffusionLayer(0.2, 3, laplacian=lap_un)
    np.testing.assert_allclose(
        np.asarray(nnx.jit(lambda m, a: m(a))(stored, u)),
        np.asarray(diffusion.diffuse(u, lap_un, 0.2, 3)),
        atol=1e-5,
    )
    assert len(jax.tree.leaves(nnx.state(stored, nnx.Param))) == 0
    assert len(jax.tree.leaves(nnx.state(stored, nn_diffusion.GraphLaplacian))) == 1
    with pytest.raises(ValueError, match="steps"):
        DiffusionLayer(0.5, -1)
    with pytest.raises(ValueError, match="max_gamma"):
        DiffusionLayer(0.1, 2, learnable_gamma=True, normalization="unnormalized")


def test_layer_learnable_gamma_stays_under_bound(pts):
    layer = DiffusionLayer(0.3, 4, learnable_gamma=True)
    assert abs(float(layer.gamma()) - 0.3) < 1e-6 and layer.max_gamma == 1.0
    target = jnp.zeros((len(pts), 3))

    def loss(m):  # pushes gamma up: more smoothing lowers this loss
        return jnp.sum((m(pts) - target) ** 2)

    opt = nnx.Optimizer(layer, optax.sgd(1.0), wrt=nnx.Param)

    @nnx.jit
    def step(m, o):
        o.update(m, nnx.grad(loss)(m))

    for _ in range(20):
        step(layer, opt)
    g = float(layer.gamma())
    assert 0.3 < g <= 1.0
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        DiffusionLayer(1.0, 2, learnable_gamma=True)


def test_coin_layer_on_softmax_outputs(pts):
    logits = np.random.default_rng(7).normal(size=(len(pts), 4)).astype(np.float32)
    coin = DiffusionLayer(0.35, 20, normalization="released_code")
    u = coin(jax.nn.softmax(logits), graph_features=pts)
    np.testing.assert_allclose(np.asarray(u).sum(1), 1.0, atol=1e-5)
    assert float(u.min()) >= 0.0


def test_doctests():
    for mod in (diffusion, nn_diffusion):
        assert doctest.testmod(mod, raise_on_error=False).failed == 0, mod.__name__
