import tempfile

import pytest

import purejaxrl_lab

purejaxrl_lab.use_cpu_cores()  # before anything runs on a device: one CPU device per core

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import ppo  # noqa: E402
from purejaxrl_lab import runtime  # noqa: E402

# Tests share compiled programs: identical programs of different tests load from one
# persistent compilation cache, private to this test session.
runtime.enable_compilation_cache(tempfile.mkdtemp(prefix="pjl-test-cache-"))

# One small configuration shared across tests, so its programs compile once per process.
SMALL = ppo.Config(total_timesteps=4 * 32 * 6, num_envs=4, num_steps=32, update_epochs=2,
                   num_minibatches=2)


@pytest.fixture(scope="session")
def small_config():
    return SMALL


def key_free(tree):
    """`tree` with typed PRNG keys replaced by their key data (comparable as arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                        else x, tree)


def assert_same(a, b):
    """Two results have bit-identical metrics and final states (keys included)."""
    for k in a.metrics:
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k], err_msg=k)
    for x, y in zip(jax.tree.leaves(key_free(a.final_state)), jax.tree.leaves(key_free(b.final_state))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
