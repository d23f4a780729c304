"""Tests of kinetix.masks."""

import jax.numpy as jnp
import pytest

import kinetix


def test_path_mask_on_dicts_and_nnx_state():
    from flax import nnx

    params = {
        "backbone": {"kernel": jnp.ones((3, 4))},
        "classifier": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)},
    }
    assert kinetix.path_mask("classifier/kernel")(params) == {
        "backbone": {"kernel": False},
        "classifier": {"kernel": True, "bias": False},
    }
    assert kinetix.path_mask(lambda p: p.endswith("kernel"))(params)["backbone"]["kernel"] is True

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.backbone = nnx.Linear(3, 4, rngs=rngs)
            self.classifier = nnx.Linear(4, 2, rngs=rngs)

    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    assert sorted(kinetix.leaf_paths(state)) == [
        "backbone/bias",
        "backbone/kernel",
        "classifier/bias",
        "classifier/kernel",
    ]
    mask = kinetix.path_mask("classifier/kernel")(state)
    import jax

    assert sum(jax.tree.leaves(mask)) == 1


def test_path_mask_errors():
    with pytest.raises(TypeError, match="regex"):
        kinetix.path_mask(3)
    with pytest.raises(ValueError, match="matched no leaf"):
        kinetix.path_mask("head")({"body": jnp.ones((2, 2))})
    with pytest.raises(TypeError, match="static_args"):
        kinetix.path_mask("head")(jnp.zeros(()))
