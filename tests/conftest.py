import pytest

import purejaxrl_lab  # noqa: F401  first, as users import it: one CPU device per core
from agents import ppo

# One small configuration shared across tests, so its programs compile once per process.
SMALL = ppo.Config(total_timesteps=4 * 32 * 6, num_envs=4, num_steps=32, update_epochs=2,
                   num_minibatches=2)


@pytest.fixture(scope="session")
def small_config():
    return SMALL
