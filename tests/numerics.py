"""Numerical helpers shared by the tests: finite-difference gradient checks and what they differentiate."""

import numpy as np
import tensorflow as tf


def directional_fd_check(fn, params, seed=0, eps=1e-3, rtol=2e-2, atol=1e-4):
    """Assert the gradient of scalar ``fn(params)`` matches a central difference along a random direction."""
    params = [tf.convert_to_tensor(p) for p in params]
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = fn(params)
    grads = tape.gradient(value, params)
    gen = np.random.default_rng(seed)
    direction = [tf.constant(gen.normal(size=p.shape), p.dtype) for p in params]
    norm = np.sqrt(sum(float(tf.reduce_sum(d * d)) for d in direction))
    direction = [d / norm for d in direction]
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction) if g is not None)
    plus = float(fn([p + eps * d for p, d in zip(params, direction)]))
    minus = float(fn([p - eps * d for p, d in zip(params, direction)]))
    numeric = (plus - minus) / (2 * eps)
    assert abs(analytic - numeric) <= atol + rtol * abs(numeric), (analytic, numeric)
    return analytic, numeric


def random_rule_state(rule, n, seed):
    """A rule state far from the initial one: moments >= 0, LSTM h and c of both signs and |c| > 1."""
    gen = np.random.default_rng(seed)
    state = gen.normal(scale=2.0, size=(n, rule.state_size)).astype("float32")
    moments = getattr(rule, "num_moments", 0)
    state[:, :moments] = np.abs(state[:, :moments])
    return tf.constant(state)


def stateless_unroll(rule, weights, task, params, state, config):
    """The unroll with the rule's weights given as tensors (``Layer.stateless_call``): a function of them to check."""
    from l2o_tf.meta import adaptation  # noqa: PLC0415

    return adaptation.unroll_with_weights(rule, weights, task, (params, state), 0, config)
