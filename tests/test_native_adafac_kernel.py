"""The native AdafacMLP step (``kernels.adafac_mlp_step``, what ``LearnedOptimizer(native_kernel=True)``
applies to AdafacMLP): equal to the TensorFlow step for every layout kind (flat, factored matrices and
conv kernels, several tensors, partial blocks) and rule configuration, used by ``fit``, forward only,
and clear about bad input."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import kernels, rules
from l2o_tf.rules.layout import Layout

pytestmark = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("c++", "g++", "clang++")),
    reason="no C++ compiler on this machine to build the native kernel",
)

RULES = {
    "default": lambda: rules.AdafacMLP(seed=3),
    "general": lambda: rules.AdafacMLP(hidden_size=8, adam_prior=1.0, exp_mult=0.3, seed=4),
    "linear_two_momenta": lambda: rules.AdafacMLP(hidden_layers=0, momentum_decays=(0.5, 0.9),
                                                  adafactor_decays=(0.8, 0.99), seed=5),
    "deep": lambda: rules.AdafacMLP(hidden_size=3, hidden_layers=3, exp_mult=1.0, seed=6),
    "step_horizon": lambda: rules.AdafacMLP(exp_mult=1.0, step_horizon=5, seed=11),  # step 9 is past it
}
LAYOUTS = {
    "flat_partial_block": [(37,)],
    "scalar": [()],
    "matrix": [(5, 7)],
    "conv_kernel": [(3, 3, 4, 6)],
    "batched_matrices": [(2, 32, 20)],
    "mixed": [(5, 7), (13,), (2, 3, 4), (1, 1)],
}


def _inputs(rule, layout, seed):
    """Gradients over ten decades, parameters, and a state the rule reached in three steps from its initial one
    (the kernel reads a row's accumulator at the row's first coordinate: the same at each in every reached state)."""
    gen = np.random.default_rng(seed)
    n = layout.num_coordinates

    def gradient():
        return tf.constant((gen.normal(size=n) * np.exp(gen.uniform(-9.0, 1.0, size=n))).astype("float32"))

    params = tf.constant(gen.normal(size=n).astype("float32"))
    state = rule.initial_state(n)
    for t in range(3):
        _, state = rule(gradient(), params, state, tf.constant(t, tf.int64), layout=layout)
    return gradient(), params, state


def _assert_steps_equal(got, expected, atol=1e-5):
    """Updates to ``atol`` of their largest (the per-tensor means are summed in another order), state to 1e-5."""
    updates, new_state = got
    scale = np.abs(expected[0].numpy()).max()
    assert scale > 1e-5  # the comparison below is not of zeros
    np.testing.assert_allclose(updates.numpy(), expected[0].numpy(), rtol=1e-4, atol=atol * scale)
    for got_column, column in zip(new_state.numpy().T, expected[1].numpy().T):  # FMA rounding: to each column's scale
        np.testing.assert_allclose(got_column, column, rtol=1e-5, atol=1e-7 * np.abs(column).max())


@pytest.mark.parametrize("rule_name", sorted(RULES))
@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
@pytest.mark.parametrize("step", [0, 9])
def test_native_step_equals_tensorflow_step(rule_name, layout_name, step):
    rule, layout = RULES[rule_name](), Layout(tuple(LAYOUTS[layout_name]))
    if rule_name == "general":
        rule.kernels[-1].assign(rule.kernels[-1] * 3.0)  # a net far from zero: both terms of the update count
    grads, params, state = _inputs(rule, layout, seed=len(layout_name) + step)
    step = tf.constant(step, tf.int64)
    expected = rule(grads, params, state, step, layout=layout)
    with kernels.native(whole_rule=True):
        got = tf.function(lambda *a: rule(*a, layout=layout))(grads, params, state, step)
    _assert_steps_equal(got, expected)


def test_large_tensor_is_streamed_sharded_and_equal():
    """A [700, 640] matrix: a state past the streaming threshold (16 MB), many blocks and grid rows per shard."""
    rule, layout = RULES["general"](), Layout(((700, 640),))
    grads, params, state = _inputs(rule, layout, seed=0)
    step = tf.constant(4, tf.int64)
    expected = rule(grads, params, state, step, layout=layout)
    with kernels.native(whole_rule=True):
        got = rule(grads, params, state, step, layout=layout)
    _assert_steps_equal(got, expected, atol=1e-4)  # TF's float32 means over 448k coordinates: ~1e-5 off


def _train(native, fused, hypergradient=False):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    rule = rules.AdafacMLP(hidden_size=8, adam_prior=1.0, exp_mult=0.3, seed=2)
    if hypergradient:  # the wrapped rule's native step inside the per-tensor step scale
        rule = rules.HypergradientScale(rule, rate=0.3, min_scale=0.1, max_scale=3.0)
    optimizer = l2o_tf.LearnedOptimizer(rule, fused=fused, native_kernel=native, jit_compile=False)
    model.compile(optimizer=optimizer, loss="mse")
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(32, 6, 6, 2)).astype("float32"), gen.normal(size=(32, 4)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    if hypergradient:  # the per-tensor scales moved away from 1
        scales = [rule.scales(optimizer.rule_state(v), Layout.of([v])).numpy() for v in model.trainable_weights]
        assert max(np.abs(np.log(s)).max() for s in scales) > 0.05, scales
    return [w.numpy() for w in model.weights], optimizer


@pytest.mark.parametrize("hypergradient", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_fit_with_the_native_step_follows_the_tensorflow_step(fused, hypergradient):
    """Eight fit steps on a conv kernel, biases and a dense matrix: the same weights as the TF step (also with
    the rule inside a ``HypergradientScale``, which keeps the native step)."""
    expected, _ = _train(native=False, fused=fused, hypergradient=hypergradient)
    got, _ = _train(native=True, fused=fused, hypergradient=hypergradient)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    variable = tf.Variable(tf.ones([4, 5]))
    inner = rules.AdafacMLP(seed=0)
    fresh = l2o_tf.LearnedOptimizer(rules.HypergradientScale(inner) if hypergradient else inner, fused=fused,
                                    native_kernel=True)
    fresh.build([variable])
    step = tf.function(lambda: fresh.apply([tf.ones([4, 5])], [variable]))
    assert "L2oAdafacMlpStep" in {op.type for op in step.get_concrete_function().graph.get_operations()}


def test_hierarchical_keeps_its_tensorflow_step_under_the_native_switch():
    """The per-tensor GRU context has no native kernel: the rule runs its TF step, not a wrong native one."""
    rule, layout = rules.Hierarchical(seed=1), Layout(((4, 5), (3,)))
    grads, params, state = _inputs(rule, layout, seed=1)
    step = tf.constant(2, tf.int64)
    with kernels.native(whole_rule=True):
        fn = tf.function(lambda *a: rule(*a, layout=layout))
        got = fn(grads, params, state, step)
        ops = {op.type for op in fn.get_concrete_function(grads, params, state, step).graph.get_operations()}
    assert "L2oAdafacMlpStep" not in ops
    for a, b in zip(got, rule(grads, params, state, step, layout=layout)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-12)


def test_differentiating_the_native_step_is_one_clear_error():
    rule, layout = rules.AdafacMLP(seed=0), Layout(((3, 4),))

    @tf.function
    def loss_gradient():
        with tf.GradientTape() as tape:
            with kernels.native(whole_rule=True):
                updates, _ = rule(tf.ones([12]), tf.ones([12]), rule.initial_state(12), tf.constant(0, tf.int64),
                                  layout=layout)
            loss = tf.reduce_sum(updates)
        return tape.gradient(loss, rule.trainable_weights)

    with pytest.raises(NotImplementedError, match="have no gradient"):
        loss_gradient()


def test_wrong_shapes_name_the_problem():
    rule = rules.AdafacMLP(hidden_size=4, hidden_layers=1, seed=0)
    features = rule.num_features
    weights = ([rule.kernels[0][:features], rule.kernels[1]], [rule.biases[0], rule.biases[1]])
    ok = dict(grads=tf.ones([12]), params=tf.ones([12]), state=rule.initial_state(12), coefficients=tf.zeros([18]),
              kernels=weights[0], biases=weights[1], moments=3, grid=(3, 4))

    def step(**changes):
        return kernels.adafac_mlp_step(**{**ok, **changes})

    assert step()[0].shape == [12]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"coefficients must be \[4 \* moments \+ 6\] = \[18\]"):
        step(coefficients=tf.zeros([17]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"state must be \[n, 3 \* moments \+ 1\] = \[12, 10\]"):
        step(state=tf.zeros([12, 9]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be whole \[5, 4\] grids"):
        step(grid=(5, 4))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer 0 needs kernel \[28, 4\]"):
        step(kernels=[rule.kernels[0], rule.kernels[1]])  # the step embedding's rows left in
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"grads and params must be vectors \[n\] of one size"):
        step(params=tf.ones([11]))
