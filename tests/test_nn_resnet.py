"""Tests of kinetix.nn.resnet: CIFAR ResNets with plain or kinetic (KITINet) residuals.

Kept small for CPU (XLA compile time dominates): the factory models are only
traced (``jax.eval_shape``); the compiled tests share one width-4 model per
residual kind with one BasicBlock per stage and 8x8 grey inputs (batch 4). Keys
use the ``rbg`` PRNG implementation: on CPU, XLA compiles threefry-based random
ops (one per parameter shape at init) much more slowly.

With 8x8 inputs and ``n_divide=(16, 2, 4, 2)`` the kinetic stages hold
16/2 = 8 particles (stage 2, 4x4 map), 4/4 = 1 particle (stage 3, 2x2 map: no
pair) and 1 position < n_divide=2 (stage 4, 1x1 map: clamped, no pair).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import kinetix
from kinetix.nn.resnet import ResNet, collision_rates, resnet18, resnet34, resnet50

RATE_KEYS = [f"layer{s}/0/kinetic/collision_rate" for s in (2, 3, 4)]


def key(seed):
    return jax.random.key(seed, impl="rbg")


def small(residual, **kw):
    """A width-4 ResNet for 8x8 grey images, one BasicBlock per stage (resnet18's code path)."""
    kw.setdefault("coll_coef", 1.0)  # threshold 0: any pair with a nonzero ratio may collide
    return ResNet(
        "basic",
        (1, 1, 1, 1),
        10,
        in_channels=1,
        width=4,
        n_divide=(16, 2, 4, 2),
        residual=residual,
        rngs=nnx.Rngs(key(0)),
        **kw,
    )


@nnx.jit
def forward(model, x, rngs):
    return model(x, rngs=rngs)


@nnx.jit
def train_step(model, opt, x, y, rngs):
    def loss_fn(m, rngs):
        logits = m(x, rngs=rngs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, rngs)
    opt.update(model, grads)
    return loss, logits


def run(model, x, rngs=None, *, eval_mode=False):
    """Forward pass on a copy, so the shared models' BatchNorm statistics never change."""
    model = nnx.clone(model)
    if eval_mode:
        model.eval()
    return forward(model, x, rngs), model


TX = optax.sgd(0.05, momentum=0.9)  # one object: the optimizer's tx is static under nnx.jit


def new_optimizer(model):
    return nnx.Optimizer(model, TX, wrt=nnx.Param)


@pytest.fixture(scope="module")
def batch():
    x = jax.random.normal(key(1), (4, 8, 8, 1))
    return x, jnp.array([0, 1, 2, 3])


@pytest.fixture(scope="module")
def plain():
    return small("plain")


@pytest.fixture(scope="module")
def kinetic():
    return small("kinetic")


@pytest.fixture(scope="module")
def sgd(plain, kinetic, batch):
    """Five SGD steps (collision seed 5) from the shared models, plus the first step's outputs."""
    out = {}
    for name, model in (("plain", plain), ("kinetic", kinetic)):
        model = nnx.clone(model)
        opt = new_optimizer(model)
        rngs = nnx.Rngs(collision=key(5))
        losses, logits, rates = [], [], []
        for _ in range(5):
            loss, lg = train_step(model, opt, *batch, rngs)
            losses.append(float(loss))
            logits.append(lg)
            rates.append(collision_rates(model))
        out[name] = dict(losses=losses, logits=logits, rates=rates, model=model)
    return out


def test_factory_shapes_and_layout():
    """resnet18/34/50 output shapes, traced only (no compilation)."""

    def check18():
        m = resnet18(7, residual="kinetic", width=2, in_channels=1, rngs=nnx.Rngs(key(0)))
        assert [len(m.layer1), len(m.layer2), len(m.layer3), len(m.layer4)] == [2, 2, 2, 2]
        assert m.layer1[0].kinetic is None  # kinetic stages 2-4 by default
        nd = [
            m.layer2[1].kinetic.n_divide,
            m.layer3[0].kinetic.n_divide,
            m.layer4[0].kinetic.n_divide,
        ]
        assert nd == [8, 4, 2]
        k = m.layer2[0].kinetic
        assert (k.layout, k.coll_coef, k.rule) == ("spatial", 0.5, "hard_sphere")
        mask = kinetix.path_mask("classifier/kernel")(nnx.state(m, nnx.Param))
        assert sum(jax.tree.leaves(mask)) == 1
        # 8x8 grey digits: stage 4 is 1x1, n_divide=2 is clamped there
        return m(jnp.zeros((2, 8, 8, 1)), rngs=nnx.Rngs(key(1)))

    def check34():
        m = resnet34(7, width=2, rngs=nnx.Rngs(key(0)))
        assert [len(m.layer1), len(m.layer2), len(m.layer3), len(m.layer4)] == [3, 4, 6, 3]
        return m(jnp.zeros((2, 16, 16, 3)))

    def check50():
        m = resnet50(7, residual="kinetic", width=2, kinetic_stages=(1, 4), rngs=nnx.Rngs(key(0)))
        assert len(m.layer3) == 6 and m.layer4[0].conv3.out_features == 2 * 8 * 4
        assert m.classifier.in_features == 64
        assert m.layer1[0].kinetic.n_divide == 16 and m.layer2[0].kinetic is None
        return m(jnp.zeros((2, 16, 16, 3)), rngs=nnx.Rngs(key(1)))

    for check in (check18, check34, check50):
        out = jax.eval_shape(check)
        assert out.shape == (2, 7) and out.dtype == jnp.float32, check.__name__


def test_same_seed_same_parameters(plain, kinetic):
    p, k = nnx.state(plain, nnx.Param), nnx.state(kinetic, nnx.Param)
    assert jax.tree.structure(p) == jax.tree.structure(k)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(k), strict=True):
        np.testing.assert_array_equal(a, b)
    assert collision_rates(plain) == {}
    assert collision_rates(kinetic) == dict.fromkeys(RATE_KEYS, 0.0)


def test_eval_and_no_rngs_parity_bitwise(plain, kinetic, batch):
    x, _ = batch
    # eval mode, even with rngs given
    y_plain, _ = run(plain, x, eval_mode=True)
    y_kin, _ = run(kinetic, x, nnx.Rngs(key(2)), eval_mode=True)
    np.testing.assert_array_equal(y_plain, y_kin)
    # train mode (batch statistics) without rngs
    y_plain, m_plain = run(plain, x)
    y_kin, m_kin = run(kinetic, x)
    np.testing.assert_array_equal(y_plain, y_kin)
    stats = [jax.tree.leaves(nnx.state(m, nnx.BatchStat)) for m in (m_plain, m_kin)]
    for a, b in zip(*stats, strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(collision_rates(m_kin).values()) == {0.0}
    # train mode with rngs but coll_coef=0: exact by construction (x + v, no collision)
    y_zero, _ = run(small("kinetic", coll_coef=0.0), x, nnx.Rngs(key(2)))
    np.testing.assert_array_equal(y_plain, y_zero)


def test_train_collisions_change_output_deterministically(kinetic, batch, sgd):
    logits = sgd["kinetic"]["logits"][0]
    assert np.all(np.isfinite(logits))
    assert not np.array_equal(logits, sgd["plain"]["logits"][0])
    rates = sgd["kinetic"]["rates"][0]
    # stage 2: 8 particles, a matching has <= 4 of the 28 pairs; stages 3-4: a single particle
    assert 0 < rates["layer2/0/kinetic/collision_rate"] <= 4 / 28 + 1e-6, rates
    assert (
        rates["layer3/0/kinetic/collision_rate"] == rates["layer4/0/kinetic/collision_rate"] == 0.0
    )

    def first_step(seed):
        model = nnx.clone(kinetic)
        return train_step(model, new_optimizer(model), *batch, nnx.Rngs(collision=key(seed))), model

    (loss, again), model = first_step(5)
    np.testing.assert_array_equal(again, logits)
    assert float(loss) == sgd["kinetic"]["losses"][0]
    p_again = jax.tree.leaves(nnx.state(model, nnx.Param))
    (_, other), _ = first_step(6)
    assert not np.array_equal(other, logits)
    # the parameters after one step are reproducible too
    model2 = nnx.clone(kinetic)
    train_step(model2, new_optimizer(model2), *batch, nnx.Rngs(collision=key(5)))
    for a, b in zip(p_again, jax.tree.leaves(nnx.state(model2, nnx.Param)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("residual", ["plain", "kinetic"])
def test_sgd_reduces_loss(residual, sgd):
    losses = sgd[residual]["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    if residual == "kinetic":
        assert all(r["layer2/0/kinetic/collision_rate"] > 0 for r in sgd[residual]["rates"])


def test_bad_inputs(kinetic):
    with pytest.raises(ValueError, match="residual must be 'plain' or 'kinetic'"):
        resnet18(residual="kinetc", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_divide must be 4"):
        resnet18(residual="kinetic", n_divide=(8, 4, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kinetic_stages"):
        resnet18(residual="kinetic", kinetic_stages=(0, 5), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="block must be"):
        ResNet("dense", (1, 1, 1, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"NHWC images \(B, H, W, 1\)"):
        kinetic(jnp.zeros((8, 8, 1)))  # no batch axis
    with pytest.raises(ValueError, match=r"NHWC images \(B, H, W, 1\)"):
        kinetic(jnp.zeros((2, 1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"NHWC images \(B, H, W, 1\)"):
        kinetic(jnp.zeros((2, 3, 8, 8)))  # channels first
    # 12x12 input: stage 3 is 3x3 = 9 positions, not divisible by its n_divide=4
    x12 = jnp.zeros((2, 12, 12, 1))
    with pytest.raises(ValueError, match=r"layer3/0: n_divide=4 does not divide the 3x3=9"):
        jax.eval_shape(lambda: small("kinetic")(x12, rngs=nnx.Rngs(key(1))))
    # ... while the plain model takes any size
    assert jax.eval_shape(lambda: small("plain")(x12)).shape == (2, 10)
