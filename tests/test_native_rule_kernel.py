"""The native whole-step rule kernels (``kernels.native(whole_rule=True)``, what
``LearnedOptimizer(native_kernel=True)`` applies): equal to the TensorFlow step in every RNNprop and
DM-LSTM configuration, used where they should be, forward only, and clear about bad input."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import kernels, rules
from numerics import random_rule_state

pytestmark = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("c++", "g++", "clang++")),
    reason="no C++ compiler on this machine to build the native kernel",
)

RULES = {
    "rnnprop_tanh": lambda: rules.RNNprop(hidden_size=5, num_layers=2, seed=3),
    "rnnprop_adam_scaled": lambda: rules.RNNprop(hidden_size=4, num_layers=2, output_form="adam_scaled", seed=3),
    "rnnprop_long_adam_scaled": lambda: rules.RNNprop(hidden_size=3, num_layers=3, long_beta_2=0.999,
                                                      output_form="adam_scaled", seed=3),
    "rnnprop_long_tanh": lambda: rules.RNNprop(hidden_size=6, num_layers=1, long_beta_2=0.99, seed=3),
    "dmlstm": lambda: rules.DMLSTM(hidden_size=5, num_layers=2, seed=3),
    "dmlstm_raw": lambda: rules.DMLSTM(hidden_size=4, num_layers=1, preprocess=False, seed=3),
}


def _graph_ops(fn, *args):
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


def _whole_step(rule, *args):
    with kernels.native(whole_rule=True):
        return tf.function(rule)(*args)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("n", [1, 37, 200])  # one row, a partial block, several blocks with a tail
@pytest.mark.parametrize("step", [0, 6])  # RNNprop: the first step's bias correction is the largest
def test_whole_step_equals_tensorflow_step(name, n, step):
    rule = RULES[name]()
    gen = np.random.default_rng(n)
    # Magnitudes from e^-12 to e^3: both branches of DM-LSTM's log-and-sign preprocessing.
    grads = tf.constant((gen.normal(size=n) * np.exp(gen.uniform(-12.0, 3.0, size=n))).astype("float32"))
    state = random_rule_state(rule, n, seed=n + 1)
    step = tf.constant(step, tf.int64)
    expected_updates, expected_state = rule(grads, grads, state, step)
    updates, new_state = _whole_step(rule, grads, grads, state, step)
    np.testing.assert_allclose(updates.numpy(), expected_updates.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(new_state.numpy(), expected_state.numpy(), rtol=1e-5, atol=1e-6)
    # The updates are not all tiny: the tolerance above is small against them.
    assert np.abs(expected_updates.numpy()).max() > 1e-3


def test_whole_step_runs_one_kernel_and_only_where_asked():
    rule = rules.RNNprop(hidden_size=3, num_layers=1)
    args = (tf.ones([8]), tf.ones([8]), rule.initial_state(8), tf.constant(1, tf.int64))
    with kernels.native(whole_rule=True):
        whole = _graph_ops(rule, *args)
    with kernels.native():
        stack = _graph_ops(rule, *args)
    assert "L2oRnnpropStep" in whole and "L2oLstmStackStep" not in whole and "MatMul" not in whole
    assert "L2oLstmStackStep" in stack and "L2oRnnpropStep" not in stack
    dmlstm = rules.DMLSTM(hidden_size=3, num_layers=1)
    args = (*args[:2], dmlstm.initial_state(8), args[3])
    with kernels.native(whole_rule=True):
        whole = _graph_ops(dmlstm, *args)
    assert "L2oDmlstmStep" in whole and "L2oLstmStackStep" not in whole and "Log" not in whole


@pytest.mark.parametrize("rule_cls, op_type", [(rules.RNNprop, "L2oRnnpropStep"), (rules.DMLSTM, "L2oDmlstmStep")])
def test_learned_optimizer_applies_the_whole_step(rule_cls, op_type):
    variable = tf.Variable(tf.ones([40]))
    optimizer = l2o_tf.LearnedOptimizer(rule_cls(hidden_size=3, num_layers=1), fused=True, native_kernel=True)
    optimizer.build([variable])
    apply = tf.function(lambda: optimizer.apply([tf.ones([40])], [variable]))
    assert op_type in {op.type for op in apply.get_concrete_function().graph.get_operations()}


@pytest.mark.parametrize("rule_cls", [rules.RNNprop, rules.DMLSTM])
def test_large_state_is_streamed_and_equal(rule_cls):
    """A state past the streaming threshold (16 MB) takes the cache-bypassing stores, in both kernels."""
    rule = rule_cls(seed=1)
    n = 60_000  # [60000, 82 or 80] float32: 19 MB
    gen = np.random.default_rng(0)
    grads = tf.constant(gen.normal(size=n).astype("float32"))
    state = random_rule_state(rule, n, seed=1)
    step = tf.constant(2, tf.int64)
    expected = rule(grads, grads, state, step)
    with kernels.native():
        stack = tf.function(rule)(grads, grads, state, step)
    for got in (_whole_step(rule, grads, grads, state, step), stack):
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_saturated_log_step_sizes_are_clipped_as_in_tensorflow():
    """adam_scaled clips its log step sizes to [-10, 5] before exp: huge head weights hit both ends."""
    rule = rules.RNNprop(hidden_size=4, num_layers=1, output_form="adam_scaled", long_beta_2=0.999)
    rule.output_kernel.assign(rule.output_kernel * 500.0)
    grads = tf.constant(np.linspace(-5.0, 5.0, 64).astype("float32"))
    state = random_rule_state(rule, 64, seed=2)
    step = tf.constant(3, tf.int64)
    expected = rule(grads, grads, state, step)
    got = _whole_step(rule, grads, grads, state, step)
    for a, b in zip(got, expected):
        assert np.all(np.isfinite(a.numpy()))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rule_cls", [rules.RNNprop, rules.DMLSTM])
def test_differentiating_the_whole_step_is_one_clear_error(rule_cls):
    rule = rule_cls(hidden_size=3, num_layers=1)
    grads, state = tf.ones([8]), rule.initial_state(8)

    @tf.function
    def loss_gradient():
        with tf.GradientTape() as tape:
            with kernels.native(whole_rule=True):
                updates, _ = rule(grads, grads, state, tf.constant(0, tf.int64))
            loss = tf.reduce_sum(updates)
        return tape.gradient(loss, rule.trainable_weights)

    with pytest.raises(NotImplementedError, match="have no gradient.*MetaTrainConfig.from_flat\\(native_kernel=True\\)"):
        loss_gradient()


def test_wrong_shapes_name_the_problem():
    rule = rules.RNNprop(hidden_size=4, num_layers=1)
    weights = rule.lstm.native_weights()
    inputs = (rule.input_kernel, rule.input_bias)
    head = (rule.output_kernel, rule.output_bias)
    state, coefficients = rule.initial_state(5), tf.zeros([8])

    def step(grads=tf.zeros([5]), state=state, coefficients=coefficients, inputs=inputs, head=head, form="tanh"):
        return kernels.rnnprop_step(grads, state, coefficients, weights, inputs, head, form)

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"coefficients must be \[3 \* moments \+ 2\] = \[8\]"):
        step(coefficients=tf.zeros([7]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"output layer needs kernel \[4, 1\] and bias \[1\]"):
        step(head=(tf.zeros([4, 2]), tf.zeros([2])))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input layer's kernel must be \[2 or 3 moments, E\]"):
        step(inputs=(tf.zeros([4, 4]), tf.zeros([4])))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"state must be \[n, leading columns"):
        step(state=tf.zeros([5, 7]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"grads must be a vector \[n\], got \[5,1\]"):
        step(grads=tf.zeros([5, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="output_form must be 'tanh' or 'adam_scaled'"):
        step(form="relu")
    dmlstm = rules.DMLSTM(hidden_size=4, num_layers=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"coefficients must be \[4\] \(k, e\^-k, e\^k, output_scale\)"):
        kernels.dmlstm_step(tf.zeros([5]), dmlstm.initial_state(5), tf.zeros([3]), dmlstm.lstm.native_weights(),
                            (dmlstm.output_kernel, dmlstm.output_bias), True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer 0 needs kernel \[5, 16\]"):  # 1 raw input + 4
        kernels.dmlstm_step(tf.zeros([5]), dmlstm.initial_state(5), tf.zeros([4]), dmlstm.lstm.native_weights(),
                            (dmlstm.output_kernel, dmlstm.output_bias), False)
