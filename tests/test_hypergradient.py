"""HypergradientScale: a per-tensor step scale adapted by the normalised hypergradient, checked against a numpy
reference, on quadratics where the right direction of the change is known, and through serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import pretrained, rules
from l2o_tf.rules.layout import Layout

SHAPES = ((3, 4), (5,))


def _grads(seed):
    return np.random.default_rng(seed).normal(size=sum(int(np.prod(s)) for s in SHAPES)).astype("float32")


def _run(rule, grads_per_step, layout):
    n = layout.num_coordinates
    params, state, out = tf.zeros([n]), rule.initial_state(n), []
    for t, g in enumerate(grads_per_step):
        updates, state = rule(tf.constant(g), params, state, tf.constant(t, tf.int64), layout=layout)
        params += updates
        out.append(updates.numpy())
    return out, state


def test_matches_a_numpy_reference_per_tensor():
    rate, lr, low, high = 0.3, 0.1, 0.5, 1.5
    rule = rules.HypergradientScale(rules.SGD(learning_rate=lr, momentum=0.5), rate=rate, min_scale=low, max_scale=high)
    layout = Layout(SHAPES)
    grads = [_grads(t) for t in range(6)]
    grads[1][:12] = -grads[0][:12]  # tensor 0 overshot at step 1: its scale must drop
    updates, state = _run(rule, grads, layout)

    sizes = np.cumsum([0] + layout.sizes)
    velocity, previous, log_scale = np.zeros(sizes[-1]), np.zeros(sizes[-1]), np.zeros(len(SHAPES))
    for t, g in enumerate(grads):
        velocity = 0.5 * velocity - lr * g
        expected = np.empty_like(velocity)
        for k in range(len(SHAPES)):
            part = slice(sizes[k], sizes[k + 1])
            gp, up = g[part], previous[part]
            cosine = np.mean(gp * up) / np.sqrt(np.mean(gp ** 2) * np.mean(up ** 2) + 1e-30)
            log_scale[k] = np.clip(log_scale[k] - rate * cosine, np.log(low), np.log(high))
            expected[part] = velocity[part] * np.exp(log_scale[k])
        np.testing.assert_allclose(updates[t], expected, rtol=1e-5, atol=1e-7)
        previous = expected
        if t == 1:
            assert log_scale[0] < -0.25  # cosine near 1 (the opposite gradient of a descent step)
    np.testing.assert_allclose(rule.scales(state, layout).numpy(), np.exp(log_scale), rtol=1e-5)


def test_rate_zero_is_the_wrapped_rule_exactly():
    inner = rules.AdafacMLP(seed=3, step_mult=0.01)
    wrapped = rules.HypergradientScale(inner, rate=0.0)
    layout = Layout(SHAPES)
    grads = [_grads(10 + t) for t in range(4)]
    plain, plain_state = _run(inner, grads, layout)
    scaled, state = _run(wrapped, grads, layout)
    for a, b in zip(plain, scaled):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain_state.numpy(), state.numpy()[:, :inner.state_size])
    assert wrapped.weights == inner.weights and wrapped.nominal_step == inner.nominal_step


def _quadratic_fit(lr, rate, steps=60):
    """Full-batch SGD on 0.5 * sum(c * w^2) with curvatures up to 1: lr > 2 diverges without adaptation."""
    keras.utils.set_random_seed(0)
    curvature = np.linspace(0.1, 1.0, 8).astype("float32")
    w = tf.Variable(np.ones(8, "float32"))
    rule = rules.SGD(learning_rate=lr)
    if rate:
        rule = rules.HypergradientScale(rule, rate=rate, min_scale=0.01, max_scale=4.0)
    optimizer = l2o_tf.LearnedOptimizer(rule)
    for _ in range(steps):
        optimizer.apply_gradients([(curvature * w, w)])
    loss = float(0.5 * np.sum(curvature * w.numpy() ** 2))
    state = optimizer.rule_state(w)
    scale = float(rule.scales(state, Layout.of([w]))[0]) if rate else 1.0
    return loss, scale


def test_shrinks_a_step_that_overshoots_and_grows_one_that_falls_short():
    diverging, _ = _quadratic_fit(2.4, 0.0)
    rescued, shrunk = _quadratic_fit(2.4, 0.2)
    assert diverging > 1.0 and rescued < 1e-3 and shrunk < 0.85
    slow, _ = _quadratic_fit(0.05, 0.0)
    faster, grown = _quadratic_fit(0.05, 0.2)
    assert grown == pytest.approx(4.0) and faster < 0.5 * slow


def test_serialization_round_trips_exactly(tmp_path):
    inner = rules.AdafacMLP(seed=4, hidden_size=5, step_mult=0.01)
    rule = rules.HypergradientScale(inner, rate=0.02, min_scale=0.2, max_scale=2.0)
    pretrained.save_rule(rule, str(tmp_path / "r"))
    loaded = pretrained.load_rule(str(tmp_path / "r"))
    assert isinstance(loaded, rules.HypergradientScale) and isinstance(loaded.rule, rules.AdafacMLP)
    assert loaded.get_config() == rule.get_config() and loaded.state_size == inner.state_size + 2
    for a, b in zip(rule.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    optimizer = l2o_tf.LearnedOptimizer(rule)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    v, w = tf.Variable(np.ones((3, 4), "float32")), tf.Variable(np.ones((3, 4), "float32"))
    for t in range(3):
        g = tf.constant(_grads(t)[:12].reshape(3, 4))
        optimizer.apply_gradients([(g, v)])
        again.apply_gradients([(g, w)])
    np.testing.assert_array_equal(v.numpy(), w.numpy())


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_scale <= 1 <= max_scale"):
        rules.HypergradientScale(rules.SGD(), min_scale=2.0)
    with pytest.raises(ValueError, match="rate >= 0"):
        rules.HypergradientScale(rules.SGD(), rate=-1.0)
    with pytest.raises(TypeError, match="wraps one UpdateRule"):
        rules.HypergradientScale(rules.HypergradientScale(rules.SGD()))
    rule = rules.HypergradientScale(rules.SGD())
    unknown_length = tf.function(lambda g: rule.call(g, g, tf.zeros([3, 3]), tf.constant(0, tf.int64)),
                                 input_signature=[tf.TensorSpec([None], tf.float32)])
    with pytest.raises(ValueError, match="HypergradientScale needs the layout of its coordinates"):
        unknown_length.get_concrete_function()
