"""Tests of kinetix.data.pde: Burgers and heat solvers, random fields, disk cache."""

import functools
import os
import warnings

import jax
import numpy as np
import pytest

from kinetix.data import pde

NU = 0.1


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def cole_hopf(x, t, nu, a, modes):
    """Exact periodic Burgers solution u = -2 nu phi_x / phi, phi_t = nu phi_xx (float64)."""
    phi = np.full_like(x, a)
    phi_x = np.zeros_like(x)
    for k, b in modes:
        decay = b * np.exp(-nu * (2 * np.pi * k) ** 2 * t)
        phi += decay * np.cos(2 * np.pi * k * x)
        phi_x -= decay * 2 * np.pi * k * np.sin(2 * np.pi * k * x)
    return -2 * nu * phi_x / phi


def spectral_upsample(u, m):
    """Trigonometric interpolation of periodic grid values onto m points."""
    n = u.shape[-1]
    c = np.fft.rfft(u) / n
    c_fine = np.zeros(u.shape[:-1] + (m // 2 + 1,), complex)
    c_fine[..., : n // 2] = c[..., : n // 2]  # drop the Nyquist mode: it is ~0 here
    return np.fft.irfft(c_fine * m, n=m)


# --------------------------------------------------------------------------- #
# Burgers
# --------------------------------------------------------------------------- #

# phi = 1 + 0.6 cos(2 pi x) + 0.3 cos(4 pi x): min phi ~ 0.1, max|u0| ~ 1.2, strongly
# nonlinear (see test_cole_hopf_case_is_nonlinear).
CH_MODES = [(1, 0.6), (2, 0.3)]


@pytest.mark.parametrize("t_final", [0.25, 1.0])
def test_burgers_matches_cole_hopf(t_final):
    n = 128
    x = np.arange(n) / n
    u0 = cole_hopf(x, 0.0, NU, 1.0, CH_MODES)
    exact = cole_hopf(x, t_final, NU, 1.0, CH_MODES)
    out = pde.solve_burgers(u0, nu=NU, t_final=t_final)
    assert out.dtype == np.float32 and out.shape == (n,)
    err = rel_l2(out, exact)
    assert err < 1e-4, err  # measured ~1e-6 (float32 round-off level)


def test_cole_hopf_case_is_nonlinear():
    """The Cole-Hopf test would catch a solver that drops u u_x: diffusion alone is far off."""
    n = 128
    x = np.arange(n) / n
    u0 = cole_hopf(x, 0.0, NU, 1.0, CH_MODES)
    exact = cole_hopf(x, 0.25, NU, 1.0, CH_MODES)
    k = 2 * np.pi * np.fft.rfftfreq(n, 1 / n)
    diffusion_only = np.fft.irfft(np.fft.rfft(u0) * np.exp(-NU * k**2 * 0.25), n=n)
    assert rel_l2(diffusion_only, exact) > 0.1


def test_burgers_converges_in_dt_with_fourth_order():
    u0 = pde.grf1d(jax.random.key(1), 4, 64)
    outs = [pde.solve_burgers(u0, nu=NU, dt=dt) for dt in (0.04, 0.02, 0.01)]
    coarse, fine = rel_l2(outs[0], outs[1]), rel_l2(outs[1], outs[2])
    assert fine < 1e-5, fine  # halving the default-size step changes almost nothing
    assert coarse / fine > 8, (coarse, fine)  # ~16 for a 4th-order method


def test_burgers_converges_in_resolution():
    u0 = np.asarray(pde.grf1d(jax.random.key(2), 4, 64))
    coarse = pde.solve_burgers(u0, nu=NU)
    fine = pde.solve_burgers(spectral_upsample(u0, 128), nu=NU)
    assert rel_l2(coarse, np.asarray(fine)[:, ::2]) < 1e-5


def test_burgers_generator_shapes_physics_and_subsample():
    key = jax.random.key(0)
    u0, ut = pde.burgers(key, 4, 64)
    assert u0.shape == ut.shape == (4, 64) and u0.dtype == ut.dtype == np.float32
    u0n, utn = np.asarray(u0, np.float64), np.asarray(ut, np.float64)
    np.testing.assert_allclose(utn.mean(1), u0n.mean(1), atol=1e-5)  # conserved mean
    assert np.all(np.linalg.norm(utn, axis=1) < np.linalg.norm(u0n, axis=1))  # energy decays
    assert np.all(np.abs(utn).max(1) <= np.abs(u0n).max(1) + 1e-5)  # maximum principle
    assert 0.1 < rel_l2(ut, u0) < 0.9  # a non-trivial map
    # deterministic under the key; subsample=2 is the 2x finer data, every other point
    np.testing.assert_array_equal(pde.burgers(key, 4, 64)[1], ut)
    s0, st = pde.burgers(key, 4, 32, subsample=2)
    np.testing.assert_array_equal(s0, u0[:, ::2])
    np.testing.assert_array_equal(st, ut[:, ::2])


def test_burgers_warns_when_under_resolved():
    x = np.arange(32) / 32
    with pytest.warns(RuntimeWarning, match="under-resolved"):
        pde.solve_burgers(np.sin(2 * np.pi * x), nu=0.002, t_final=0.3, dt=1e-3)


def test_burgers_unstable_step_raises():
    x = np.arange(32) / 32
    with pytest.raises(FloatingPointError, match="smaller dt"):
        pde.solve_burgers(3 * np.sin(2 * np.pi * x), nu=0.01, t_final=1.0, dt=0.5)


# --------------------------------------------------------------------------- #
# Heat
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kx,ky", [(0, 0), (1, 0), (2, 3), (-1, 4), (8, 0)])
def test_heat_single_mode_is_exact(kx, ky):
    n, kappa, t = 16, 0.01, 0.7
    x = np.arange(n) / n
    phase = 2 * np.pi * (kx * x[:, None] + ky * x[None, :])
    u0 = np.cos(phase) + 0.5 * np.sin(phase)
    out = np.asarray(pde.solve_heat2d(u0, kappa=kappa, t=t))
    expected = np.exp(-kappa * (2 * np.pi) ** 2 * (kx**2 + ky**2) * t) * u0
    np.testing.assert_allclose(out, expected, atol=2e-6)


def test_heat_conserves_mean_semigroup_and_is_nontrivial():
    u0, ut = pde.heat2d(jax.random.key(0), 16, 32)
    assert u0.shape == ut.shape == (16, 32, 32) and ut.dtype == np.float32
    assert np.abs(np.asarray(u0).mean((1, 2))).max() > 0.05  # the mean mode is present
    np.testing.assert_allclose(ut.mean((1, 2)), u0.mean((1, 2)), atol=1e-6)
    ratio = np.linalg.norm(ut) / np.linalg.norm(u0)
    assert 0.5 < ratio < 0.95, ratio  # expected 0.75 for the defaults
    assert 0.25 < rel_l2(ut, u0) < 0.7  # expected 0.44
    half = pde.solve_heat2d(u0, kappa=0.01, t=0.5)
    np.testing.assert_allclose(pde.solve_heat2d(half, kappa=0.01, t=0.5), ut, atol=1e-6)
    np.testing.assert_allclose(pde.solve_heat2d(u0, kappa=0.01, t=0.0), u0, atol=1e-6)


def test_heat_super_resolution_inputs():
    u0, ut = pde.heat2d(jax.random.key(3), 2, 64)
    lo = pde.subsample2d(u0)
    assert lo.shape == (2, 32, 32)
    np.testing.assert_array_equal(lo, np.asarray(u0)[:, ::2, ::2])
    assert pde.subsample2d(ut, 4).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="divide"):
        pde.subsample2d(u0, 3)


# --------------------------------------------------------------------------- #
# Gaussian random fields
# --------------------------------------------------------------------------- #


def target_eigs(n, ndim, alpha, tau, sigma):
    k = np.fft.fftfreq(n, 1 / n)
    k2 = k**2 if ndim == 1 else k[:, None] ** 2 + k[None, :] ** 2
    return sigma**2 * (4 * np.pi**2 * k2 + tau**2) ** (-alpha)


def test_grf1d_spectrum_matches_fno_covariance():
    n = 32
    u = np.asarray(pde.grf1d(jax.random.key(0), 4000, n), np.float64)
    lam = target_eigs(n, 1, 2.0, 5.0, 25.0)  # 625 (4 pi^2 k^2 + 25)^-2
    power = np.mean(np.abs(np.fft.fft(u) / n) ** 2, axis=0)  # E|c_k|^2 = lam_k
    np.testing.assert_allclose(power, lam, rtol=0.12)
    np.testing.assert_allclose(u.var(), lam.sum(), rtol=0.05)
    np.testing.assert_allclose(u.mean(0), 0.0, atol=0.1)


def test_grf2d_spectrum_matches_covariance():
    n = 16
    u = np.asarray(pde.grf2d(jax.random.key(0), 1500, n), np.float64)
    lam = target_eigs(n, 2, 2.5, 7.0, 7.0**1.5)
    power = np.mean(np.abs(np.fft.fft2(u) / n**2) ** 2, axis=0)
    np.testing.assert_allclose(power, lam, rtol=0.25)
    np.testing.assert_allclose(u.var(), lam.sum(), rtol=0.05)


def test_grf_keys_and_zero_mean():
    a = pde.grf1d(jax.random.key(7), 3, 16)
    np.testing.assert_array_equal(a, pde.grf1d(jax.random.key(7), 3, 16))
    np.testing.assert_array_equal(a, pde.grf1d(7, 3, 16))  # int seed = jax.random.key(seed)
    assert not np.allclose(a, pde.grf1d(jax.random.key(8), 3, 16))
    assert not np.allclose(a[0], a[1])
    b = pde.grf2d(jax.random.key(7), 3, 16, zero_mean=True)
    np.testing.assert_allclose(np.asarray(b).mean((1, 2)), 0.0, atol=1e-6)
    assert not np.allclose(b, pde.grf2d(jax.random.key(9), 3, 16, zero_mean=True))


# --------------------------------------------------------------------------- #
# Disk cache
# --------------------------------------------------------------------------- #


@pytest.fixture
def counting_heat(monkeypatch):
    calls = []

    @functools.wraps(pde.heat2d)
    def counting(*args, **kwargs):
        calls.append(kwargs)
        return pde.heat2d(*args, **kwargs)

    monkeypatch.setitem(pde._GENERATORS, "heat2d", counting)
    return calls


def test_cache_round_trip_and_keys(tmp_path, counting_heat):
    u0, ut = pde.load_or_generate("heat2d", 0, 3, cache_dir=tmp_path, resolution=8)
    assert isinstance(u0, np.ndarray) and u0.dtype == np.float32 and u0.shape == (3, 8, 8)
    ref0, reft = pde.heat2d(jax.random.key(0), 3, 8)
    np.testing.assert_array_equal(u0, ref0)
    np.testing.assert_array_equal(ut, reft)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c0, ct = pde.load_or_generate("heat2d", 0, 3, cache_dir=tmp_path, resolution=8)
        # an explicit default is the same data set, hence the same file
        pde.load_or_generate("heat2d", 0, 3, cache_dir=tmp_path, resolution=8, kappa=0.01)
    assert len(counting_heat) == 1
    np.testing.assert_array_equal(c0, u0)
    np.testing.assert_array_equal(ct, ut)
    other = pde.load_or_generate("heat2d", 0, 3, cache_dir=tmp_path, resolution=8, kappa=0.02)
    pde.load_or_generate("heat2d", 1, 3, cache_dir=tmp_path, resolution=8)
    assert len(counting_heat) == 3
    assert not np.allclose(other[1], ut)
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and all(f.endswith(".npz") for f in names)  # no temp files left


@pytest.mark.parametrize("damage", ["garbage", "truncate", "tamper"])
def test_cache_detects_corruption_and_regenerates(tmp_path, counting_heat, damage):
    u0, ut = pde.load_or_generate("heat2d", 0, 2, cache_dir=tmp_path, resolution=8)
    (path,) = tmp_path.iterdir()
    if damage == "garbage":
        path.write_bytes(b"this is not an npz file")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid npz whose data no longer match the stored checksum
        with np.load(path) as f:
            arrays = dict(f)
        arrays["uT"] = arrays["uT"] + 1.0
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        r0, rt = pde.load_or_generate("heat2d", 0, 2, cache_dir=tmp_path, resolution=8)
    assert len(counting_heat) == 2
    np.testing.assert_array_equal(r0, u0)
    np.testing.assert_array_equal(rt, ut)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was rewritten: loads cleanly now
        pde.load_or_generate("heat2d", 0, 2, cache_dir=tmp_path, resolution=8)
    assert len(counting_heat) == 2


@pytest.mark.parametrize("kind", ["a file", "under a file", "read-only"])
def test_unusable_cache_dir_falls_back_to_no_cache(tmp_path, monkeypatch, counting_heat, kind):
    """One warning per call, the data as generated (uncached), nothing written."""
    (tmp_path / "file").write_bytes(b"x")
    cache = {"a file": "file", "under a file": "file/sub", "read-only": "ro"}[kind]
    if kind == "read-only":  # simulated: the tests may run as root, who can write anyway
        (tmp_path / "ro").mkdir()

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(pde.tempfile, "mkstemp", denied)
    ref0, reft = pde.heat2d(jax.random.key(0), 2, 8)
    for calls in (1, 2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            u0, ut = pde.load_or_generate("heat2d", 0, 2, cache_dir=tmp_path / cache, resolution=8)
        msgs = [str(w.message) for w in caught]
        assert len(msgs) == 1 and "not usable" in msgs[0] and str(tmp_path / cache) in msgs[0]
        assert caught[0].category is RuntimeWarning
        assert len(counting_heat) == calls  # generated each time: nothing was cached
        np.testing.assert_array_equal(u0, ref0)
        np.testing.assert_array_equal(ut, reft)
    assert os.listdir(tmp_path / "ro" if kind == "read-only" else tmp_path) == (
        [] if kind == "read-only" else ["file"]
    )
    assert (tmp_path / "file").read_bytes() == b"x"


def test_cache_dir_env_var(tmp_path, monkeypatch, counting_heat):
    monkeypatch.delenv("KINETIX_CACHE", raising=False)
    assert pde.default_cache_dir() == pde.Path.home() / ".cache" / "kinetix" / "pde"
    monkeypatch.setenv("KINETIX_CACHE", str(tmp_path / "env"))
    assert pde.default_cache_dir() == tmp_path / "env"
    pde.load_or_generate("heat2d", 0, 1, resolution=8)
    assert len(list((tmp_path / "env").glob("heat2d_n1_seed0_*.npz"))) == 1


# --------------------------------------------------------------------------- #
# Bad arguments
# --------------------------------------------------------------------------- #

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: pde.burgers(KEY, 0, 64), "n_samples"),
        (lambda: pde.burgers(KEY, 1.5, 64), "n_samples"),
        (lambda: pde.burgers(KEY, True, 64), "n_samples"),
        (lambda: pde.burgers(KEY, 2, 63), "even"),
        (lambda: pde.burgers(KEY, 2, 6), "resolution"),
        (lambda: pde.burgers(KEY, 2, 64, nu=0.0), "nu"),
        (lambda: pde.burgers(KEY, 2, 64, nu=-0.1), "nu"),
        (lambda: pde.burgers(KEY, 2, 64, nu=float("nan")), "nu"),
        (lambda: pde.burgers(KEY, 2, 64, t_final=0.0), "t_final"),
        (lambda: pde.burgers(KEY, 2, 64, dt=0.0), "dt"),
        (lambda: pde.burgers(KEY, 2, 64, subsample=0), "subsample"),
        (lambda: pde.solve_burgers(np.zeros(33)), "even"),
        (lambda: pde.solve_burgers(np.zeros(32), t_final=-1.0), "t_final"),
        (lambda: pde.solve_burgers(np.full(32, np.nan)), "NaN"),
        (lambda: pde.heat2d(KEY, 2, 64, kappa=0.0), "kappa"),
        (lambda: pde.heat2d(KEY, 2, 64, t_final=-1.0), "t_final"),
        (lambda: pde.heat2d(KEY, 0, 64), "n_samples"),
        (lambda: pde.heat2d(KEY, 2, 9), "even"),
        (lambda: pde.solve_heat2d(np.zeros((8, 16)), kappa=1.0, t=1.0), "shape"),
        (lambda: pde.grf1d(KEY, 2, 16, alpha=0.5), "alpha"),
        (lambda: pde.grf2d(KEY, 2, 16, alpha=1.0), "alpha"),
        (lambda: pde.grf1d(KEY, 2, 16, tau=0.0), "tau"),
        (lambda: pde.grf1d(KEY, 2, 16, sigma=-1.0), "sigma"),
        (lambda: pde.load_or_generate("navier", 0, 2, cache_dir="/nonexistent"), "unknown"),
        (lambda: pde.load_or_generate("heat2d", 0, 0, cache_dir="/nonexistent"), "n"),
        (lambda: pde.load_or_generate("heat2d", 0, 2, cache_dir="/x", kapa=1.0), "kapa"),
        (lambda: pde.load_or_generate("heat2d", 0, 2, cache_dir="/x", kappa=[1.0]), "kappa"),
        (lambda: pde.load_or_generate("heat2d", "0", 2, cache_dir="/x"), "key_seed"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
