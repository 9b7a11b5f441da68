"""The native fused LSTM-stack kernels: equal to the TensorFlow step and its gradient, in the rules, in Keras fit
and in meta-training; deterministic; clear errors."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import kernels, rules, tasks
from l2o_tf.meta import MetaTrainConfig, MetaTrainer, UnrollConfig
from numerics import directional_fd_check, random_rule_state, stateless_unroll

pytestmark = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("c++", "g++", "clang++")),
    reason="no C++ compiler on this machine to build the native kernel",
)


RULES = {
    "rnnprop": lambda: rules.RNNprop(hidden_size=5, num_layers=2),
    "rnnprop_long_adam_scaled": lambda: rules.RNNprop(hidden_size=3, num_layers=3, long_beta_2=0.999,
                                                      output_form="adam_scaled"),
    "dmlstm": lambda: rules.DMLSTM(hidden_size=7, num_layers=2),
    "dmlstm_one_layer_raw": lambda: rules.DMLSTM(hidden_size=4, num_layers=1, preprocess=False),
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("n", [1, 37, 200])  # one row, a partial block, several blocks with a tail
def test_rule_step_equals_tensorflow_step(name, n):
    rule = RULES[name]()
    gen = np.random.default_rng(n)
    grads = tf.constant(gen.normal(scale=3.0, size=n).astype("float32"))
    params = tf.constant(gen.normal(size=n).astype("float32"))
    state = random_rule_state(rule, n, seed=n + 1)
    step = tf.constant(4, tf.int64)
    expected_updates, expected_state = rule(grads, params, state, step)
    with kernels.native():
        updates, new_state = tf.function(rule)(grads, params, state, step)
    assert new_state.shape == expected_state.shape
    np.testing.assert_allclose(updates.numpy(), expected_updates.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new_state.numpy(), expected_state.numpy(), rtol=1e-5, atol=1e-6)
    # The rule's moments (the columns the kernel copies through) are bit-identical.
    moments = getattr(rule, "num_moments", 0)
    np.testing.assert_array_equal(new_state.numpy()[:, :moments], expected_state.numpy()[:, :moments])


def test_saturated_gates_stay_finite_and_equal():
    """Pre-activations far beyond tanh's clamp (|z| > 7.9) give the same saturated cell as TF."""
    rule = rules.DMLSTM(hidden_size=4, num_layers=2, preprocess=False)
    for weight in rule.trainable_weights:
        weight.assign(weight * 200.0)
    grads = tf.constant(np.linspace(-50.0, 50.0, 64).astype("float32"))
    state = random_rule_state(rule, 64, seed=3)
    step = tf.constant(1, tf.int64)
    expected = rule(grads, grads, state, step)
    with kernels.native():
        got = rule(grads, grads, state, step)
    for a, b in zip(got, expected):
        assert np.all(np.isfinite(a.numpy()))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def _fit_weights(native_kernel, fused):
    gen = np.random.default_rng(0)
    x = gen.normal(size=(96, 12)).astype("float32")
    y = gen.integers(0, 4, 96)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(4)])
    optimizer = l2o_tf.LearnedOptimizer(rules.RNNprop(), fused=fused, native_kernel=native_kernel)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    initial = [w.numpy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return initial, [w.numpy() for w in model.trainable_weights], optimizer


@pytest.mark.parametrize("fused", [False, True])
def test_keras_fit_with_native_kernel_equals_tensorflow_step(fused):
    initial, reference, _ = _fit_weights(native_kernel=False, fused=fused)
    _, native, optimizer = _fit_weights(native_kernel=True, fused=fused)
    assert optimizer.iterations.numpy() == 6
    for a, b in zip(native, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The fit moved every weight by far more than that tolerance: the comparison has teeth.
    assert min(float(np.abs(a - b).max()) for a, b in zip(reference, initial)) > 1e-3


def test_native_kernel_round_trips_in_config():
    optimizer = l2o_tf.LearnedOptimizer(rules.DMLSTM(), native_kernel=True)
    config = optimizer.get_config()
    assert config["native_kernel"] is True
    assert l2o_tf.LearnedOptimizer.from_config(config).native_kernel


def test_native_kernel_with_jit_compile_is_refused():
    with pytest.raises(ValueError, match="native_kernel=True.*XLA"):
        l2o_tf.LearnedOptimizer(rules.RNNprop(), jit_compile=True, native_kernel=True)


def test_wrong_shapes_name_the_problem():
    rule = rules.RNNprop(hidden_size=4, num_layers=1)
    kernel, bias = rule.lstm.kernels[0], rule.lstm.biases[0]
    inputs = tf.zeros([5, 4])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"state must be \[n, leading columns"):
        kernels.lstm_stack_step(inputs, tf.zeros([5, 9]), tf.zeros([5, 2]), [kernel], [bias])
    with pytest.raises(tf.errors.InvalidArgumentError, match="layer 0 needs kernel"):
        kernels.lstm_stack_step(tf.zeros([5, 3]), tf.zeros([5, 10]), tf.zeros([5, 2]), [kernel], [bias])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"the input layer needs kernel \[2, E\]"):
        kernels.lstm_stack_step(tf.zeros([5, 2]), tf.zeros([5, 10]), tf.zeros([5, 2]), [kernel], [bias],
                                embedding=(tf.zeros([3, 4]), tf.zeros([4])))


def test_missing_compiler_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("L2O_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(kernels.KernelBuildError, match=r"needs a C\+\+ compiler.*CXX"):
        kernels.library_path()


def test_tensorflow_path_is_the_default():
    """Outside native(): no custom op in the traced rule, so unrolls stay differentiable and exportable."""
    rule = rules.RNNprop(hidden_size=3, num_layers=1)
    n = 8
    args = (tf.ones([n]), tf.ones([n]), rule.initial_state(n), tf.constant(1, tf.int64))
    ops = {op.type for op in tf.function(rule).get_concrete_function(*args).graph.get_operations()}
    assert "L2oLstmStackStep" not in ops
    with kernels.native():
        ops = {op.type for op in tf.function(rule).get_concrete_function(*args).graph.get_operations()}
    assert "L2oLstmStackStep" in ops


def _two_step_gradients(rule, n, native):
    """Gradients of a loss of two chained rule steps w.r.t. the rule's weights, the first state and the
    gradient input (through the rules' preprocessing: the kernel's input gradient)."""
    gen = np.random.default_rng(n)
    grads = tf.constant(gen.normal(scale=3.0, size=n).astype("float32"))
    state = random_rule_state(rule, n, seed=n + 1)
    with tf.GradientTape() as tape:
        tape.watch([grads, state])
        with kernels.native(native):
            updates, new_state = rule(grads, grads, state, tf.constant(3, tf.int64))
            later, last_state = rule(0.5 * grads + updates, grads, new_state, tf.constant(4, tf.int64))
        loss = tf.reduce_sum(tf.sin(100.0 * later)) + tf.reduce_sum(tf.cos(last_state)) + 1e4 * tf.reduce_sum(updates ** 2)
    return tape.gradient(loss, rule.trainable_weights + [state, grads])


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("n", [37, 200])
def test_gradient_equals_tensorflow_gradient(name, n):
    rule = RULES[name]()
    expected = _two_step_gradients(rule, n, native=False)
    got = _two_step_gradients(rule, n, native=True)
    for a, b in zip(got, expected):
        scale = float(np.abs(b.numpy()).max())
        assert scale > 0
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5 * scale)


def test_weight_gradients_are_deterministic():
    """Summed per fixed partition, in order: the same bits on every call (exact meta-training resume)."""
    rule = rules.DMLSTM(hidden_size=6, num_layers=2)
    n = 32 * 70 + 5  # more blocks than partitions, and a partial block
    first = _two_step_gradients(rule, n, native=True)
    second = _two_step_gradients(rule, n, native=True)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("rule_cls", [rules.RNNprop, rules.DMLSTM])
def test_native_meta_gradient_matches_finite_differences(rule_cls):
    """Second order (the optimizee gradient depends on the parameters): the kernel's input gradient is exercised."""
    task = tasks.quadratic(batch_size=2, dim=3, init_stddev=1.0)
    rule = rule_cls(hidden_size=3, num_layers=2, output_scale=0.1, seed=2)
    config = UnrollConfig(length=4, second_order=True)
    params, state = task.init_params(0), rule.initial_state(6)

    def meta_loss(weights):
        with kernels.native():
            return stateless_unroll(rule, weights, task, params, state, config).meta_loss

    directional_fd_check(meta_loss, [w.value for w in rule.trainable_weights], eps=1e-2, rtol=3e-2, atol=1e-4)


def _quadratic_trainer(tmp_path, **overrides):
    config = dict(task="quadratic", task_kwargs={"batch_size": 8, "dim": 40}, rule="dmlstm",
                  rule_kwargs={"hidden_size": 6, "output_scale": 0.1}, unroll=5, curriculum=(20,), meta_steps=3,
                  meta_lr=1e-2, validate_every=1000, checkpoint_every=1000)
    config.update(overrides)
    return MetaTrainer(MetaTrainConfig.from_flat(**config), str(tmp_path))


def test_meta_trainer_with_native_kernel_equals_tensorflow(tmp_path, monkeypatch):
    traced = []
    step = kernels.lstm_stack_step
    monkeypatch.setattr(kernels, "lstm_stack_step", lambda *args: traced.append(1) or step(*args))
    reference = _quadratic_trainer(tmp_path / "tf", native_kernel=False)
    native = _quadratic_trainer(tmp_path / "native", native_kernel=True)
    loss, grads = reference.meta_gradient()
    assert not traced
    native_loss, native_grads = native.meta_gradient()
    assert len(traced) == 5  # the unroll's steps ran the kernel
    np.testing.assert_allclose(float(native_loss), float(loss), rtol=1e-5)
    for a, b in zip(native_grads, grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5 * float(np.abs(b.numpy()).max()))
    reference.train(verbose=0)
    native.train(verbose=0)
    for a, b in zip(native.rule.weights, reference.rule.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert json.loads(open(tmp_path / "native" / "config.json").read())["unrolling"]["native_kernel"] is True


@pytest.mark.parametrize("overrides, message", [
    ({"jit_compile": True}, "jit_compile or native_kernel, not both"),
    ({"maml_inner_steps": 1, "maml_second_order": True}, "does not combine with maml_second_order"),
])
def test_meta_trainer_native_kernel_conflicts_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        MetaTrainConfig.from_flat(task="quadratic", native_kernel=True, **overrides)


def _recorded_choice(out_dir):
    return json.loads(open(out_dir / "config.json").read())["unrolling"]["native_kernel"]


def test_auto_runs_the_stack_kernel_where_it_is_faster_and_records_the_choice(tmp_path):
    """--native_kernel=auto (the default): the stack kernel for a rule with an LSTM stack on a CPU, the TF path where
    the rule has none or XLA is asked for; config.json records the choice (True/False, never "auto")."""
    stack = _quadratic_trainer(tmp_path / "dmlstm", meta_steps=1)
    assert MetaTrainConfig.from_flat(task="quadratic").unrolling.native_kernel == "auto"
    assert stack.config.unrolling.native_kernel is True
    stack.train(verbose=0)
    assert _recorded_choice(tmp_path / "dmlstm") is True
    mlp = _quadratic_trainer(tmp_path / "adafac", rule="adafac_mlp", rule_kwargs={"hidden_size": 4}, meta_steps=1)
    xla = _quadratic_trainer(tmp_path / "xla", jit_compile=True, meta_steps=1)
    assert mlp.config.unrolling.native_kernel is False and xla.config.unrolling.native_kernel is False


def test_a_resume_keeps_the_recorded_choice_and_refuses_another(tmp_path):
    """A run recorded with the TF path resumes on it under auto (exactly, whatever this machine would choose), and
    resumes to the same weights as an uninterrupted TF run; an explicit different choice is refused."""
    whole = _quadratic_trainer(tmp_path / "whole", native_kernel=False, meta_steps=4)
    whole.train(verbose=0)
    first = _quadratic_trainer(tmp_path / "run", native_kernel=False, meta_steps=2, checkpoint_every=1)
    first.train(verbose=0)
    resumed = _quadratic_trainer(tmp_path / "run", meta_steps=4, checkpoint_every=1)  # auto
    assert resumed.config.unrolling.native_kernel is False
    resumed.train(verbose=0)
    for a, b in zip(resumed.rule.weights, whole.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="different config \\(native_kernel\\)"):
        _quadratic_trainer(tmp_path / "run", native_kernel=True, meta_steps=5).train(verbose=0)


def test_auto_falls_back_to_tensorflow_with_a_warning_where_the_kernels_do_not_build(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(kernels, "_library", None)
    with pytest.warns(UserWarning, match="native CPU kernel is unavailable.*LSTM stack in TensorFlow"):
        trainer = _quadratic_trainer(tmp_path / "run", meta_steps=1)
    assert trainer.config.unrolling.native_kernel is False


def test_native_kernel_flag_values():
    assert MetaTrainConfig.from_flat(task="quadratic", native_kernel="true").unrolling.native_kernel is True
    assert MetaTrainConfig.from_flat(task="quadratic", native_kernel="false").unrolling.native_kernel is False
    with pytest.raises(ValueError, match="native_kernel must be auto, true or false, got 'yes'"):
        MetaTrainConfig.from_flat(task="quadratic", native_kernel="yes")
