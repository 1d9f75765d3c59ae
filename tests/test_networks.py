import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import MLP, ActorCritic
from agents.common.networks import orthogonal


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (64, 1)])
def test_orthogonal_matches_jax_initializer(shape):
    ours = orthogonal(np.sqrt(2.0))(jax.random.key(3), shape)
    reference = jax.nn.initializers.orthogonal(np.sqrt(2.0))(jax.random.key(3), shape)
    np.testing.assert_allclose(ours, reference, atol=2e-6)
    small = min(shape)
    gram = ours.T @ ours if shape[0] >= shape[1] else ours @ ours.T
    np.testing.assert_allclose(gram, 2.0 * np.eye(small), atol=1e-5)


def test_actor_critic_heads_and_vmapped_init():
    net = ActorCritic(action_dim=3, discrete=True)
    params = jax.jit(jax.vmap(lambda k: net.init(k, jnp.zeros((5, 4)))))(jax.random.split(jax.random.key(0), 4))
    pi, value = net.apply(jax.tree.map(lambda x: x[0], params), jnp.ones((5, 4)))
    assert pi.logits.shape == (5, 3) and value.shape == (5,)
    # Actor head initialised with scale 0.01: a near-uniform first policy.
    np.testing.assert_allclose(pi.probs, 1 / 3, atol=0.01)
    cont = ActorCritic(action_dim=2, discrete=False, log_std_init=-0.5)
    p = cont.init(jax.random.key(1), jnp.zeros((4,)))
    pi, _ = cont.apply(p, jnp.zeros((4,)))
    np.testing.assert_allclose(pi.stddev(), np.exp(-0.5), rtol=1e-6)


def test_dense_gradient_equals_autodiff():
    # Dense layers take their kernel gradient as transpose(x) @ g through YNNPACK on CPU
    # (agents/common/networks.py); the gradients are autodiff's, to float32 rounding, for a
    # batch, several batch axes, and vmapped per-run.
    net = MLP((64, 64), 2)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 7, 4))
    params = net.init(jax.random.PRNGKey(1), x)

    def reference(p, x):  # the same network with jax's own product
        h = x
        layers = [p["params"][f"Dense_{i}"] for i in range(3)]
        for layer in layers[:-1]:
            h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
        return h @ layers[-1]["kernel"] + layers[-1]["bias"]

    def loss(apply):
        return lambda p, x: jnp.sum(jnp.sin(apply(p, x)))

    np.testing.assert_allclose(net.apply(params, x), reference(params, x), rtol=1e-6, atol=1e-6)
    for batch in (x[0], x):
        ours = jax.grad(loss(net.apply))(params, batch)
        theirs = jax.grad(loss(reference))(params, batch)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    per_run = jax.vmap(jax.grad(loss(net.apply)), (None, 0))(params, x)
    for i in (0, 4):
        one = jax.grad(loss(reference))(params, x[i])
        for a, b in zip(jax.tree.leaves(per_run), jax.tree.leaves(one)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5)
