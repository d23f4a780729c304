r"""Graph-diffusion layer of Diff-ResNet and COIN as a Flax NNX module.

``DiffusionLayer`` applies ``steps`` explicit-Euler steps ``x <- x - gamma L x``
(:func:`kinetix.diffusion.diffuse`) over the rows of ``x``, i.e. over the
samples of a batch. It is used transductively: labelled and unlabelled points
are passed together, and the loss only reads the labelled rows.

* Diff-ResNet (Wang, Dou, Bao, Shi, TPAMI 2024) applies it to hidden features:
  ``h = h + relu(fc(h)); h = diffusion(h, L); logits = classifier(h)``.
* COIN (Wang, Bao, Shi, 2024) applies it to the base model's softmax output:
  ``u = diffusion(softmax(logits), L)``, then trains with ``NLL(log u)`` on the
  labelled rows.

Where ``L`` comes from, in order of precedence:

1. ``laplacian=`` given to ``__call__``: a dense array or a
   ``jax.experimental.sparse.BCOO`` matrix (e.g. built once from the inputs, as
   in the released few-shot code);
2. ``laplacian=`` given to the constructor: stored in a
   :class:`GraphLaplacian` variable, which is not trained;
3. otherwise a kNN graph built from the batch itself by
   :func:`kinetix.diffusion.graph_laplacian`, on ``graph_features`` if given,
   else on ``x``. By default the gradient is stopped through the graph, as the
   code's ``weight.detach()`` does.

The stability bound (Eq. 7 of :mod:`kinetix.diffusion`: ``|1 - gamma lambda| <= 1``
for every eigenvalue ``lambda`` of ``L``, i.e. ``gamma * lambda_max(L) <= 2`` for a
symmetric positive semi-definite ``L``, ``gamma * max |lambda|^2 / Re(lambda) <= 2``
in general) is enforced according to ``check``. A per-batch graph with
``normalization="symmetric"`` or ``"random_walk"`` satisfies it for any
``gamma <= 1`` whatever the data (also with ``symmetrize_mode="none"``), so the
check needs no eigenvalue and also works under ``nnx.jit``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import sparse as jsparse

from kinetix import diffusion
from kinetix.validation import check_flag, is_traced

#: Normalisations whose Laplacian has ``lambda_max <= 2`` for any data.
BOUNDED_NORMALIZATIONS = ("symmetric", "random_walk")


class GraphLaplacian(nnx.Variable):
    """A fixed graph Laplacian stored in a module (not a trainable parameter)."""


def _int_hyper(value: Any, name: str, minimum: int) -> int:
    """An integer hyper-parameter: a Python or NumPy int, or a concrete 0-d integer array."""
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not is_int and isinstance(value, np.ndarray | jax.Array) and not is_traced(value):
        is_int = value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer)
    if not is_int:
        raise ValueError(
            f"{name} must be an integer >= {minimum} (a Python or NumPy int), got {value!r} "
            f"({type(value).__name__})."
        )
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {int(value)}.")
    return int(value)


def _float_hyper(value: Any, name: str) -> float:
    """A real, finite, concrete scalar hyper-parameter (Python/NumPy number or 0-d array)."""
    if is_traced(value):
        raise ValueError(
            f"{name} must be a concrete number, got a traced value: hyper-parameters are fixed "
            "when the layer is built (build it outside jit/grad/vmap)."
        )
    if isinstance(value, bool | np.bool_) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real scalar, got {value!r}.")
    arr = np.asarray(value)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r} ({arr.dtype}).")
    v = float(arr)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number (not NaN or inf), got {v}.")
    return v


class DiffusionLayer(nnx.Module):
    r"""``steps`` explicit-Euler graph-diffusion steps ``x <- x - gamma L x`` (Diff-ResNet / COIN).

    The released code's ``DiffusionLayer`` repeated ``layer_num`` times.
    ``gamma`` is the code's ``step_size`` (Diff-ResNet) or ``sigma2`` (COIN).

    Args:
      gamma: step size ``>= 0``. With ``learnable_gamma`` it is the initial
        value and must lie in ``(0, max_gamma)``.
      steps: number of steps ``T >= 0`` (the code's ``layer_num``). ``T * gamma``
        is the diffusion time.
      learnable_gamma: if true, ``gamma = max_gamma * sigmoid(raw)`` with a
        trainable ``raw`` (an ``nnx.Param``). ``gamma`` then stays in
        ``(0, max_gamma)``, and ``max_gamma <= 2 / lambda_max`` keeps every
        value stable.
      max_gamma: the cap of a learnable ``gamma``. The default is ``1.0``
        (``= 2 / 2``) for a per-batch graph with a bounded normalisation, and
        ``2 / lambda_max`` of a constructor ``laplacian``; in other cases it
        must be given (e.g. ``kinetix.diffusion.max_stable_gamma(L)``).
      laplacian: optional fixed ``(N, N)`` dense Laplacian, stored in a
        :class:`GraphLaplacian` variable. Its stability is checked here, once.
      n_top, sigma, normalization, symmetrize_mode, truncation, bandwidth,
        fixed_bandwidth, self_loops: options of
        :func:`kinetix.diffusion.graph_laplacian`, used when the layer builds
        the graph from the batch. Defaults: ``n_top=8, sigma=4`` (the code's),
        ``normalization="symmetric"``.
      graph_gradients: if false (default, as the code's ``detach``), no
        gradient flows through the graph construction.
      check: ``"raise"`` (default): ``ValueError`` on an unstable step; needs a
        concrete ``L`` or a known bound on ``lambda_max``: a bounded
        normalisation, a constructor ``laplacian``, or ``lam_max=`` at call
        time. ``"clip"``: traced-safe, ``gamma <- min(gamma, 2 / lam)`` (Gershgorin
        bound when ``lam_max`` is unknown). ``"none"``: no check.
      param_dtype: dtype of the learnable ``raw`` parameter (a float dtype).

    Raises:
      ValueError: on an invalid hyper-parameter, checked here: ``gamma``,
        ``max_gamma``, ``fixed_bandwidth`` real, finite, concrete scalars
        (Python/NumPy numbers or 0-d arrays; NaN, inf and ``bool`` refused);
        ``steps``, ``n_top``, ``sigma`` integers (Python or NumPy ints, or
        concrete 0-d integer arrays); flags ``bool``; the string options one of
        theirs; an unstable stored ``laplacian`` (``check="raise"``).

    Example (Diff-ResNet on hidden features, then COIN on a softmax output):

      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from kinetix.nn.diffusion import DiffusionLayer
      >>> h = jax.random.normal(jax.random.key(0), (40, 3))
      >>> layer = DiffusionLayer(gamma=0.5, steps=10)  # graph built from h
      >>> layer(h).shape
      (40, 3)
      >>> x = jax.random.normal(jax.random.key(1), (40, 3))
      >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(2), (40, 3)))
      >>> coin = DiffusionLayer(gamma=0.35, steps=20, normalization="released_code")
      >>> u = coin(probs, graph_features=x)  # graph from the inputs, diffuse the output
      >>> bool(jnp.allclose(u.sum(axis=1), 1.0, atol=1e-5))  # D~ - W~ keeps rows summing to 1
      True
    """

    def __init__(
        self,
        gamma: float = 0.5,
        steps: int = 10,
        *,
        learnable_gamma: bool = False,
        max_gamma: float | None = None,
        laplacian: jax.Array | None = None,
        n_top: int = 8,
        sigma: int = 4,
        normalization: diffusion.Normalization = "symmetric",
        symmetrize_mode: diffusion.Symmetrize = "mean",
        truncation: diffusion.Truncation = "strict",
        bandwidth: diffusion.Bandwidth = "row",
        fixed_bandwidth: float | None = None,
        self_loops: bool = True,
        graph_gradients: bool = False,
        check: diffusion.Check = "raise",
        param_dtype: Any = jnp.float32,
    ):
        steps = _int_hyper(steps, "steps", 0)
        gamma = _float_hyper(gamma, "gamma")
        if gamma < 0:
            raise ValueError(
                f"gamma must be a finite number >= 0 (a negative step runs the heat equation "
                f"backwards), got {gamma}."
            )
        n_top = _int_hyper(n_top, "n_top", 2)
        sigma = _int_hyper(sigma, "sigma", 1)
        if fixed_bandwidth is not None:
            fixed_bandwidth = _float_hyper(fixed_bandwidth, "fixed_bandwidth")
            if fixed_bandwidth <= 0:
                raise ValueError(f"fixed_bandwidth must be > 0 (or None), got {fixed_bandwidth}.")
        elif sigma == 1:
            raise ValueError(
                "sigma=1 selects each point's zero distance to itself as its bandwidth; use "
                "sigma >= 2 (the code uses 4), or pass fixed_bandwidth."
            )
        learnable_gamma = check_flag(learnable_gamma, "learnable_gamma")
        self_loops = check_flag(self_loops, "self_loops")
        graph_gradients = check_flag(graph_gradients, "graph_gradients")
        try:
            param_dtype = jnp.dtype(param_dtype)
        except TypeError as err:
            raise ValueError(f"param_dtype must be a float dtype, got {param_dtype!r}.") from err
        if not jnp.issubdtype(param_dtype, jnp.floating):
            raise ValueError(f"param_dtype must be a float dtype, got {param_dtype}.")
        if max_gamma is not None:
            max_gamma = _float_hyper(max_gamma, "max_gamma")
        for value, name, options in (
            (normalization, "normalization", diffusion.NORMALIZATIONS),
            (symmetrize_mode, "symmetrize_mode", diffusion.SYMMETRIZE_MODES),
            (truncation, "truncation", diffusion.TRUNCATIONS),
            (bandwidth, "bandwidth", diffusion.BANDWIDTHS),
            (check, "check", diffusion.CHECKS),
        ):
            if not isinstance(value, str) or value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}.")
        if normalization == "released_code" and symmetrize_mode != "mean":
            raise ValueError(
                "normalization='released_code' symmetrises with (W + W^T)/2 after normalising; "
                f"got symmetrize_mode={symmetrize_mode!r}. Use 'mean'."
            )
        self.steps = steps
        self.n_top, self.sigma = n_top, sigma
        self.normalization = normalization
        self.symmetrize_mode = symmetrize_mode
        self.truncation = truncation
        self.bandwidth = bandwidth
        self.fixed_bandwidth = fixed_bandwidth
        self.self_loops = self_loops
        self.graph_gradients = graph_gradients
        self.check = check
        self.learnable_gamma = learnable_gamma

        # lambda_eff (lambda_max for a symmetric PSD L) of the constructor Laplacian, a float.
        self.lam_max: float | None = None
        if laplacian is not None:
            if isinstance(laplacian, jsparse.BCOO):
                raise ValueError(
                    "A BCOO Laplacian cannot be stored in the module; pass it at call time "
                    "(layer(x, laplacian=L, lam_max=...)) or store L.todense()."
                )
            lap = jnp.asarray(laplacian)
            if lap.ndim != 2 or lap.shape[0] != lap.shape[1]:
                raise ValueError(f"laplacian must be a square (N, N) matrix, got {lap.shape}.")
            stable = diffusion.max_stable_gamma(lap)  # 2 / lambda_eff; 0: no gamma > 0 stable
            self.lam_max = math.inf if stable == 0 else 2.0 / stable
            self.laplacian = GraphLaplacian(lap)
        else:
            self.laplacian = None

        if learnable_gamma:
            if max_gamma is None:
                if self.lam_max is not None:
                    max_gamma = math.inf if self.lam_max == 0 else 2.0 / self.lam_max
                elif normalization in BOUNDED_NORMALIZATIONS:
                    max_gamma = 1.0
                else:
                    raise ValueError(
                        f"learnable_gamma with normalization={normalization!r} needs max_gamma: "
                        "the bound 2 / lambda_max(L) depends on the data. Pass "
                        "max_gamma=kinetix.diffusion.max_stable_gamma(L) for a representative L, "
                        "or use normalization='symmetric' (max_gamma defaults to 1)."
                    )
            if not (math.isfinite(max_gamma) and max_gamma > 0):
                raise ValueError(
                    f"max_gamma must be a finite number > 0, got {max_gamma!r}"
                    + (
                        " (the stored laplacian admits no stable gamma > 0: it has an "
                        "eigenvalue with Re <= 0)."
                        if self.lam_max is not None and math.isinf(self.lam_max)
                        else "."
                    )
                )
            if not 0 < gamma < max_gamma:
                raise ValueError(
                    f"a learnable gamma is max_gamma * sigmoid(raw), so its initial value must "
                    f"lie in (0, max_gamma) = (0, {max_gamma:g}); got gamma={gamma}."
                )
            self.max_gamma: float | None = float(max_gamma)
            raw = math.log(gamma / (max_gamma - gamma))  # logit(gamma / max_gamma)
            self.gamma_raw = nnx.Param(jnp.asarray(raw, param_dtype))
            self.gamma_init = float(gamma)
        else:
            self.max_gamma = None
            self.gamma_init = float(gamma)
        if self.lam_max is not None and check == "raise":
            lam = None if math.isinf(self.lam_max) else self.lam_max  # None: the exact message
            diffusion.check_stability(self.laplacian.get_value(), self._gamma_bound(), lam_max=lam)

    # ------------------------------------------------------------------ helpers

    def _gamma_bound(self) -> float:
        """A concrete upper bound on gamma (the value itself when it is fixed)."""
        return self.max_gamma if self.learnable_gamma else self.gamma_init

    def gamma(self) -> jax.Array:
        """The current step size (a scalar array)."""
        if self.learnable_gamma:
            return self.max_gamma * jax.nn.sigmoid(self.gamma_raw.get_value())
        return jnp.asarray(self.gamma_init, jnp.float32)

    def build_laplacian(self, features: jax.Array) -> jax.Array:
        """The kNN-graph Laplacian of ``features`` (rows = nodes), with the layer's options."""
        feats = jnp.reshape(features, (features.shape[0], -1))
        if not self.graph_gradients:
            feats = jax.lax.stop_gradient(feats)
        return diffusion.graph_laplacian(
            feats,
            self.n_top,
            self.sigma,
            normalization=self.normalization,
            symmetrize_mode=self.symmetrize_mode,
            truncation=self.truncation,
            bandwidth=self.bandwidth,
            fixed_bandwidth=self.fixed_bandwidth,
            self_loops=self.self_loops,
        )

    # --------------------------------------------------------------------- call

    def __call__(
        self,
        x: jax.Array,
        laplacian: Any = None,
        *,
        graph_features: jax.Array | None = None,
        lam_max: float | None = None,
    ) -> jax.Array:
        """Diffuses ``x`` (``(N, ...)``, one row per sample) over the graph.

        Args:
          x: node values: hidden features (Diff-ResNet) or probabilities (COIN).
          laplacian: optional ``(N, N)`` Laplacian (dense or BCOO) for this call.
          graph_features: features to build the graph from, when no Laplacian
            is given or stored (default: ``x``).
          lam_max: optional ``lambda_max(L)`` (for a non-symmetric ``L``,
            ``max |lambda|^2 / Re(lambda)``) or an upper bound on it (a float)
            for a call-time ``laplacian``. It lets ``check="raise"`` work under
            ``jit``.

        Returns:
          An array with the shape of ``x``.
        """
        lam = lam_max
        if laplacian is not None:
            lap = laplacian
        elif self.laplacian is not None:
            lap = self.laplacian.get_value()
            lam = self.lam_max if lam is None else lam
        else:
            lap = self.build_laplacian(x if graph_features is None else graph_features)
            if lam is None and self.normalization in BOUNDED_NORMALIZATIONS:
                lam = 2.0
        if self.check == "raise":
            diffusion.check_stability(lap, self._gamma_bound(), lam_max=lam)
            mode = "none"
        else:
            mode = self.check
        return diffusion.diffuse(x, lap, self.gamma(), self.steps, lam_max=lam, check=mode)


__all__ = ["BOUNDED_NORMALIZATIONS", "DiffusionLayer", "GraphLaplacian"]
