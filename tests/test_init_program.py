"""models.run_init compiles an initialization program at XLA:CPU's backend optimization level 1
(cheap to compile; it runs once per study). The weights it draws must be bitwise those of the
default compilation, on the machine the suite runs on: for each of ltjax's initializers, for
Flax's defaults in a convolution and a dense layer (what a module of your own gets), and with a
traced std (an init-std sweep). The models are small: the default compilation of each random
kernel costs about 1.5 s."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import models

KEYS = jax.random.split(jax.random.PRNGKey(0), 2)


class _FlaxDefaults(nn.Module):
    """A lecun_normal (Flax's default) conv kernel, batch norm, a uniform dense kernel."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x))
        return nn.Dense(10, kernel_init=nn.initializers.uniform(0.3))(x.reshape(x.shape[0], -1))


def _cases():
    out = {}
    for init in models.initializers.INITIALIZERS:
        m = models.mlp((4,), input_shape=(3, 3, 1), init=init)
        out[init] = (jax.vmap(m.init), KEYS)
    flax_defaults = models.wrap(_FlaxDefaults(), input_shape=(6, 6, 3), num_outputs=10)
    out["flax_defaults"] = (jax.vmap(flax_defaults.init), KEYS)
    unit = models.mlp((4,), input_shape=(3, 3, 1), init_std=1.0)
    out["init_std_sweep"] = (jax.vmap(lambda k, s: models.init_with_std(unit, k, s)), KEYS, jnp.asarray([0.1, 0.05]))
    return out


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_run_init_draws_the_bits_of_the_default_compilation(name):
    fn, *args = CASES[name]
    cheap, default = models.run_init(fn, *args), jax.jit(fn)(*args)
    assert jax.tree.structure(cheap) == jax.tree.structure(default)
    for a, b in zip(jax.tree.leaves(cheap), jax.tree.leaves(default)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(np.asarray(a).std() > 0 for a in jax.tree.leaves(cheap))  # random draws, not only constants
