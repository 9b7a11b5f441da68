"""Update rules: state layout, seeding, config, closed forms, and differentiability."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import rules
from numerics import directional_fd_check

LEARNED = [rules.DMLSTM, rules.RNNprop]


def _run(rule, grads_seq, state=None):
    n = grads_seq[0].shape[0]
    state = rule.initial_state(n) if state is None else state
    params = tf.zeros([n])
    outs = []
    for step, g in enumerate(grads_seq):
        updates, state = rule(tf.constant(g, tf.float32), params, state, tf.constant(step, tf.int64))
        outs.append(updates.numpy())
    return np.stack(outs), state


@pytest.mark.parametrize(
    "rule, size",
    [(rules.DMLSTM(), 80), (rules.RNNprop(), 82), (rules.RNNprop(long_beta_2=0.999), 83), (rules.Adam(), 2),
     (rules.SGD(), 1)],
)
def test_state_sizes_and_shapes(rule, size):
    assert rule.state_size == size
    state = rule.initial_state(7)
    assert state.shape == (7, size) and state.dtype == tf.float32
    updates, new_state = rule(tf.ones([7]), tf.zeros([7]), state, tf.constant(0, tf.int64))
    assert updates.shape == (7,) and new_state.shape == (7, size)


@pytest.mark.parametrize("cls", LEARNED)
def test_seeded_initialisation(cls):
    a, b, c = cls(seed=3), cls(seed=3), cls(seed=4)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    kernels_a = [w.numpy() for w in a.weights if "kernel" in w.name]
    kernels_c = [w.numpy() for w in c.weights if "kernel" in w.name]
    assert all(not np.allclose(x, y) for x, y in zip(kernels_a, kernels_c))


@pytest.mark.parametrize(
    "rule",
    [
        rules.DMLSTM(hidden_size=5, preprocess=False, output_scale=0.1, seed=2),
        rules.RNNprop(hidden_size=6, num_layers=1, beta_1=0.9, seed=5),
        rules.RNNprop(hidden_size=6, num_layers=1, output_form="adam_scaled", seed=5),
        rules.RNNprop(hidden_size=6, num_layers=1, output_form="adam_scaled", long_beta_2=0.999, seed=5),
        rules.Adam(learning_rate=0.02, beta_1=0.8),
        rules.SGD(learning_rate=0.3, momentum=0.5, nesterov=True),
    ],
)
def test_config_round_trip_gives_same_updates(rule, rng):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rule))
    assert type(clone) is type(rule) and clone.get_config() == rule.get_config()
    grads = [rng.normal(size=9) for _ in range(4)]
    np.testing.assert_array_equal(_run(rule, grads)[0], _run(clone, grads)[0])


def test_log_and_sign_closed_form():
    k = 5.0
    g = tf.constant([1.0, -0.5, 1e-4, -1e-3, 0.0])
    out = rules.log_and_sign(g, k).numpy()
    expected = np.array(
        [[0.0, 1.0], [np.log(0.5) / k, -1.0], [-1.0, np.exp(k) * 1e-4], [-1.0, -np.exp(k) * 1e-3], [-1.0, 0.0]]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_rnnprop_is_invariant_to_gradient_scale(rng):
    """RNNprop's inputs are normalised by sqrt(v_hat): scaling all gradients leaves updates unchanged."""
    rule = rules.RNNprop(seed=1, epsilon=0.0)
    grads = [rng.normal(size=16) for _ in range(6)]
    base, _ = _run(rule, grads)
    scaled, _ = _run(rule, [1000.0 * g for g in grads])
    np.testing.assert_allclose(base, scaled, rtol=1e-4, atol=1e-7)
    assert np.abs(base).max() <= rule.output_scale


def test_rnnprop_moments_in_state(rng):
    rule = rules.RNNprop(seed=0)
    grads = [rng.normal(size=5) for _ in range(3)]
    _, state = _run(rule, grads)
    m = v = 0.0
    for g in grads:
        m = 0.95 * m + 0.05 * g
        v = 0.95 * v + 0.05 * g**2
    np.testing.assert_allclose(state[:, 0], m, rtol=1e-5)
    np.testing.assert_allclose(state[:, 1], v, rtol=1e-5)


def test_adam_scaled_rnnprop_with_a_zero_output_layer_is_adam(rng):
    """output_form="adam_scaled": step = -output_scale * exp(logit) * m_hat / sqrt(v_hat); logit 0 gives Adam."""
    rule = rules.RNNprop(seed=3, output_scale=0.02, output_form="adam_scaled")
    rule.output_kernel.assign(tf.zeros_like(rule.output_kernel))
    rule.output_bias.assign(tf.fill(rule.output_bias.shape, float(np.log(0.5))))
    grads = [rng.normal(size=6) for _ in range(8)]
    updates, _ = _run(rule, grads)
    reference, _ = _run(rules.Adam(learning_rate=0.01, beta_1=0.95, beta_2=0.95, epsilon=1e-8), grads)
    np.testing.assert_allclose(updates, reference, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="output_form must be one of"):
        rules.RNNprop(output_form="linear")


def test_long_memory_rnnprop_with_a_zero_output_layer_is_a_sum_of_two_adams(rng):
    """long_beta_2: logits (z1, z2) weigh Adam's direction with the fast (0.95) and the slow (0.999) second moment."""
    rule = rules.RNNprop(seed=3, output_scale=0.02, output_form="adam_scaled", long_beta_2=0.999)
    assert rule.input_kernel.shape == (3, 20) and rule.output_kernel.shape == (20, 2)
    rule.output_kernel.assign(tf.zeros_like(rule.output_kernel))
    rule.output_bias.assign(np.log([0.5, 2.0]).astype(np.float32))
    grads = [rng.normal(size=6) * (1.0 if i < 50 else 1e-3) for i in range(350)]  # the slow moment remembers 1.0
    updates, state = _run(rule, grads)
    fast, _ = _run(rules.Adam(learning_rate=0.01, beta_1=0.95, beta_2=0.95, epsilon=1e-8), grads)
    slow, slow_state = _run(rules.Adam(learning_rate=0.04, beta_1=0.95, beta_2=0.999, epsilon=1e-8), grads)
    np.testing.assert_allclose(updates, fast + slow, rtol=1e-4, atol=1e-4 * np.abs(fast).max())
    np.testing.assert_allclose(state[:, 2], slow_state[:, 1], rtol=1e-5)
    # Per unit step size, the fast direction has forgotten that gradients were 1000x larger; the slow one has not.
    assert np.abs(slow[-1] / 0.04).mean() < 0.05 * np.abs(fast[-1] / 0.01).mean()
    with pytest.raises(ValueError, match="long_beta_2"):
        rules.RNNprop(long_beta_2=1.0)


def test_lstm_stack_matches_a_textbook_lstm(rng):
    """The stack computes sigmoids as (1 + tanh(z/2)) / 2 for speed: it must still be the LSTM."""
    rule = rules.DMLSTM(hidden_size=3, num_layers=2, preprocess=False, seed=4)
    for weight in rule.lstm.biases:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    n, hidden = 7, 3
    inputs = rng.normal(size=(n, 1)).astype("float32")
    state = rng.normal(size=(n, 4 * hidden)).astype("float32")
    output, new_state = rule.lstm(tf.constant(inputs), tf.constant(state))

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    x, expected = inputs.astype("float64"), []
    for layer, (kernel, bias) in enumerate(zip(rule.lstm.kernels, rule.lstm.biases)):
        h, c = state[:, 2 * layer * hidden : (2 * layer + 1) * hidden], state[:, (2 * layer + 1) * hidden : (2 * layer + 2) * hidden]
        z = np.concatenate([x, h], axis=1) @ kernel.numpy() + bias.numpy()
        i, f, g, o = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        expected += [h, c]
        x = h
    np.testing.assert_allclose(output.numpy(), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.numpy(), np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)


def test_adam_rule_matches_reference(rng):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    grads = [rng.normal(size=6) for _ in range(10)]
    updates, _ = _run(rules.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), grads)
    m = v = np.zeros(6)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        # float32 cancellation in 1 - beta_2**t costs ~1e-5 relative against this float64 reference.
        np.testing.assert_allclose(updates[t - 1], -alpha * m / (np.sqrt(v) + eps), rtol=1e-4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_reference(rng, nesterov):
    lr, mu = 0.1, 0.9
    grads = [rng.normal(size=4) for _ in range(8)]
    updates, _ = _run(rules.SGD(learning_rate=lr, momentum=mu, nesterov=nesterov), grads)
    velocity = np.zeros(4)
    for t, g in enumerate(grads):
        velocity = mu * velocity - lr * g
        expected = mu * velocity - lr * g if nesterov else velocity
        np.testing.assert_allclose(updates[t], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "rule",
    [
        rules.DMLSTM(hidden_size=4, output_scale=1.0, seed=1),
        rules.RNNprop(hidden_size=4, output_scale=1.0, seed=1),
        rules.RNNprop(hidden_size=4, output_scale=1.0, output_form="adam_scaled", seed=1),
    ],
)
def test_updates_are_differentiable_in_rule_weights(rule, rng):
    """Meta-training differentiates updates w.r.t. the rule weights: check against finite differences."""
    grads = [tf.constant(rng.normal(size=5), tf.float32) for _ in range(3)]
    weights = [w.value for w in rule.trainable_weights]
    target = tf.constant(rng.normal(size=5), tf.float32)

    def objective(ws):
        state = rule.initial_state(5)
        total = 0.0
        for step, g in enumerate(grads):
            (updates, state), _ = rule.stateless_call(ws, [], g, tf.zeros([5]), state, tf.constant(step, tf.int64))
            total += tf.reduce_sum(updates * target)
        return total

    directional_fd_check(objective, weights, eps=1e-2, rtol=2e-2)


def test_get_by_name_and_errors():
    assert isinstance(rules.get("rnnprop"), rules.RNNprop)
    assert isinstance(rules.get("DM-LSTM"), rules.DMLSTM)
    with pytest.raises(ValueError, match="Unknown rule 'lstm2'.*dmlstm"):
        rules.get("lstm2")
    with pytest.raises(ValueError, match="learning_rate > 0"):
        rules.Adam(learning_rate=0)
    with pytest.raises(ValueError, match="hidden_size >= 1"):
        rules.RNNprop(hidden_size=0)
