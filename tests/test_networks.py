import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common import MLP, ActorCritic
from agents.common import cpu
from agents.common.cpu import orthogonal


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


def test_patch_conv_equals_flax_conv():
    # cpu.PatchConv computes a "VALID" convolution as one product over 3x3 patches; against
    # nn.Conv with the same parameters: outputs and gradients to float32 rounding, for an
    # image batch [5, 10, 10, 4], a single image, and extra batch axes. Initialised with the
    # same initialiser and key, the parameters are identical (same names and shapes).
    x = jax.random.uniform(jax.random.key(0), (5, 10, 10, 4))
    init = nn.initializers.orthogonal(np.sqrt(2.0))
    ours = cpu.PatchConv(16, (3, 3), kernel_init=init)
    flax_conv = nn.Conv(16, (3, 3), padding="VALID", kernel_init=init)
    params = ours.init(jax.random.key(1), x)
    theirs = flax_conv.init(jax.random.key(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(a, b)
    params = jax.tree.map(lambda a: a + 0.1, params)  # non-zero bias too
    for batch in (x, x[0], x.reshape(5, 1, 10, 10, 4)):
        out = ours.apply(params, batch)
        assert out.shape == batch.shape[:-3] + (8, 8, 16)
        np.testing.assert_allclose(out, flax_conv.apply(params, batch), rtol=1e-5, atol=1e-5)
    loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x)))  # noqa: E731
    for a, b in zip(jax.tree.leaves(jax.grad(loss(ours))(params)),
                    jax.tree.leaves(jax.grad(loss(flax_conv))(params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.fixture
def without_cpu_speedups():
    cpu.use_cpu_speedups(False)
    yield
    cpu.use_cpu_speedups(True)


def test_cpu_speedups_apply_on_cpu_only_and_can_be_turned_off(without_cpu_speedups):
    """Turned off (as on GPU/TPU), networks are plain flax layers with flax's orthogonal
    initialiser, the optimiser is optax's Adam, and forward-mode differentiation works."""
    import optax

    from agents.common import make_optimizer

    assert not cpu.active()
    layer = cpu.dense(8, 2.0)
    assert layer.dot_general is None and layer.kernel_init is not None
    assert isinstance(cpu.conv(16, (3, 3), 1.0), nn.Conv)
    plain = nn.Dense(8, kernel_init=nn.initializers.orthogonal(2.0), bias_init=nn.initializers.zeros)
    x = jnp.ones((3, 4))
    ours, theirs = layer.init(jax.random.key(0), x), plain.init(jax.random.key(0), x)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(a, b)
    net = MLP((8,), 2)
    params = net.init(jax.random.key(0), x)
    # jvp and hessian through the network: refused by a custom VJP, fine without it.
    f = lambda x: jnp.sum(net.apply(params, x) ** 2)  # noqa: E731
    _, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
    assert np.isfinite(tangent)
    assert jax.hessian(f)(x[0]).shape == (4, 4)
    state = make_optimizer().init(params)
    assert isinstance(state, optax.ScaleByAdamState)
    cpu.use_cpu_speedups(True)
    assert cpu.active()  # this test machine runs on CPU
    assert isinstance(cpu.conv(16, (3, 3), 1.0), cpu.PatchConv)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda x: jnp.sum(MLP((8,), 2).apply(params, x)), (x,), (jnp.ones_like(x),))
