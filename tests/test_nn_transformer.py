"""Tests of kinetix.nn.transformer: a small text encoder with plain or kinetic residuals.

Kept small for CPU: dim 32, 1 layer (2 residuals), 4 particles of dimension 8 per token,
batch 4 of 12 tokens with padding, one module-scoped model per residual kind.
Keys use the ``rbg`` PRNG implementation (faster XLA compiles on CPU).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kinetix
from kinetix.nn.resnet import collision_rates
from kinetix.nn.transformer import TextEncoder

RATE_KEYS = ["layers/0/res1/collision_rate", "layers/0/res2/collision_rate"]


def key(seed):
    return jax.random.key(seed, impl="rbg")


def small(residual, **kw):
    kw = dict(dim=32, depth=1, heads=2, mlp_dim=64, max_len=16, particle_dim=8, coll_coef=0.9) | kw
    return TextEncoder(50, 3, dropout=0.1, residual=residual, rngs=nnx.Rngs(key(0)), **kw)


def streams(seed):
    # separate streams: dropout masks are then the same for the plain and kinetic models
    return nnx.Rngs(dropout=key(seed), collision=key(seed + 100))


@nnx.jit
def forward(model, tokens, mask, rngs):
    return model(tokens, mask, rngs=rngs)


TX = optax.sgd(0.1, momentum=0.9)  # one object: the optimizer's tx is static under nnx.jit


@nnx.jit
def train_step(model, opt, tokens, mask, y, rngs):
    def loss_fn(m, rngs):
        logits = m(tokens, mask, rngs=rngs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, rngs)
    opt.update(model, grads)
    return loss, logits


def run(model, tokens, mask, rngs=None, *, eval_mode=False):
    model = nnx.clone(model)
    if eval_mode:
        model.eval()
    return forward(model, tokens, mask, rngs), model


@pytest.fixture(scope="module")
def batch():
    lengths = jnp.array([12, 9, 5, 2])
    mask = jnp.arange(12)[None, :] < lengths[:, None]
    tokens = jnp.where(mask, jax.random.randint(key(1), (4, 12), 1, 50), 0)
    return tokens, mask, jnp.array([0, 1, 2, 0])


@pytest.fixture(scope="module")
def plain():
    return small("plain")


@pytest.fixture(scope="module")
def kinetic():
    return small("kinetic")


@pytest.fixture(scope="module")
def sgd(plain, kinetic, batch):
    out = {}
    for name, model in (("plain", plain), ("kinetic", kinetic)):
        model = nnx.clone(model)
        opt = nnx.Optimizer(model, TX, wrt=nnx.Param)
        rngs = streams(5)
        losses, logits, rates = [], [], []
        for _ in range(8):
            loss, lg = train_step(model, opt, *batch, rngs)
            losses.append(float(loss))
            logits.append(lg)
            rates.append(collision_rates(model))
        out[name] = dict(losses=losses, logits=logits, rates=rates)
    return out


def test_shapes_layout_and_parameters(plain, kinetic, batch):
    tokens, mask, _ = batch
    for model in (plain, kinetic):
        out = nnx.eval_shape(lambda m: m(tokens, mask, rngs=streams(0)), model)
        assert out.shape == (4, 3) and out.dtype == jnp.float32
        assert nnx.eval_shape(lambda m: m(tokens[:, :7]), model).shape == (4, 3)  # mask=None
    assert plain.layers[0].res1 is None
    res = kinetic.layers[0].res2
    assert (res.layout, res.particle_dim, res.coll_coef) == ("token", 8, 0.9)
    p, k = nnx.state(plain, nnx.Param), nnx.state(kinetic, nnx.Param)
    assert jax.tree.structure(p) == jax.tree.structure(k)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(k), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sum(jax.tree.leaves(kinetix.path_mask("classifier/kernel")(p))) == 1
    assert collision_rates(plain) == {}
    assert collision_rates(kinetic) == dict.fromkeys(RATE_KEYS, 0.0)


def test_eval_and_no_rngs_parity_bitwise(plain, kinetic, batch):
    tokens, mask, _ = batch
    y_plain, _ = run(plain, tokens, mask, eval_mode=True)
    y_kin, _ = run(kinetic, tokens, mask, streams(1), eval_mode=True)
    assert y_plain.shape == (4, 3) and np.all(np.isfinite(y_plain))
    np.testing.assert_array_equal(y_plain, y_kin)
    # train mode, rngs=None: no dropout, no collisions
    y_none, m_kin = run(kinetic, tokens, mask)
    np.testing.assert_array_equal(y_none, y_plain)
    assert set(collision_rates(m_kin).values()) == {0.0}
    # padding tokens do not matter
    y_pad, _ = run(plain, jnp.where(mask, tokens, 7), mask, eval_mode=True)
    np.testing.assert_array_equal(y_pad, y_plain)


def test_coll_coef_zero_train_parity_bitwise(plain, batch):
    """Train mode with rngs and dropout: coll_coef=0 is x + v by construction, same dropout keys."""
    tokens, mask, _ = batch
    y_plain, _ = run(plain, tokens, mask, nnx.Rngs(key(3)))
    y_zero, _ = run(small("kinetic", coll_coef=0.0), tokens, mask, nnx.Rngs(key(3)))
    np.testing.assert_array_equal(y_plain, y_zero)


def test_train_collisions_change_output_deterministically(kinetic, batch, sgd):
    logits = sgd["kinetic"]["logits"][0]
    assert np.all(np.isfinite(logits))
    assert not np.array_equal(logits, sgd["plain"]["logits"][0])  # same dropout masks
    rates = sgd["kinetic"]["rates"][0]
    # 4 particles per token: a matching has <= 2 of the 6 pairs
    assert all(0 < r <= 2 / 6 + 1e-6 for r in rates.values()), rates
    model = nnx.clone(kinetic)
    opt = nnx.Optimizer(model, TX, wrt=nnx.Param)
    loss, again = train_step(model, opt, *batch, streams(5))
    np.testing.assert_array_equal(again, logits)
    assert float(loss) == sgd["kinetic"]["losses"][0]
    model = nnx.clone(kinetic)
    opt = nnx.Optimizer(model, TX, wrt=nnx.Param)
    _, other = train_step(model, opt, *batch, nnx.Rngs(dropout=key(5), collision=key(6)))
    assert not np.array_equal(other, logits)  # only the collision stream changed


@pytest.mark.parametrize("residual", ["plain", "kinetic"])
def test_sgd_reduces_loss(residual, sgd):
    losses = sgd[residual]["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_bad_inputs(plain, batch):
    tokens, mask, _ = batch
    with pytest.raises(ValueError, match="residual must be 'plain' or 'kinetic'"):
        small("kinetik")
    with pytest.raises(ValueError, match="particle_dim=12 must divide dim=32"):
        small("kinetic", particle_dim=12)
    with pytest.raises(ValueError, match="heads=3 must divide dim=32"):
        TextEncoder(50, 3, dim=32, heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        TextEncoder(50, 3, depth=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"expects \(B, T\) token ids"):
        plain(tokens[0])
    with pytest.raises(ValueError, match=r"expects \(B, T\) token ids"):
        plain(tokens[..., None])
    with pytest.raises(TypeError, match="integer token ids"):
        plain(tokens.astype(jnp.float32))
    with pytest.raises(ValueError, match="mask shape"):
        plain(tokens, mask[:, :5])
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        plain(jnp.zeros((2, 17), jnp.int32))
