"""LearnedOptimizer in Keras: exact plumbing, fit, custom loops, config, .keras round trip, edge cases."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules


def _data(n=800, features=12, classes=4, seed=0):
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(n, features)).astype("float32")
    y = gen.integers(0, classes, n)
    return x, y


def _mlp(seed=1, features=12, classes=4):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(classes)]
    )


def _fit(optimizer, steps, batch=16, seed=1):
    x, y = _data()
    model = _mlp(seed)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: steps * batch], y[: steps * batch], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return model


def _weights(model):
    return [w.numpy() for w in model.trainable_weights]


def _max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_adam_rule_equals_keras_adam_after_50_fit_steps():
    kwargs = dict(learning_rate=3e-3, beta_1=0.85, beta_2=0.99, epsilon=1e-6)
    ours = _fit(l2o_tf.LearnedOptimizer(rules.Adam(**kwargs)), steps=50)
    reference = _fit(keras.optimizers.Adam(**kwargs), steps=50)
    assert ours.optimizer.iterations.numpy() == 50
    assert _max_diff(_weights(ours), _weights(reference)) <= 1e-6
    assert _max_diff(_weights(ours), _weights(_mlp(1))) > 1e-2  # it did train


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_rule_equals_keras_sgd(nesterov):
    kwargs = dict(learning_rate=0.05, momentum=0.9, nesterov=nesterov)
    ours = _fit(l2o_tf.LearnedOptimizer(rules.SGD(**kwargs)), steps=30)
    reference = _fit(keras.optimizers.SGD(**kwargs), steps=30)
    assert _max_diff(_weights(ours), _weights(reference)) <= 1e-6


def test_learning_rate_scales_updates():
    half = _fit(l2o_tf.LearnedOptimizer(rules.SGD(learning_rate=0.1), learning_rate=0.5), steps=10)
    direct = _fit(l2o_tf.LearnedOptimizer(rules.SGD(learning_rate=0.05)), steps=10)
    assert _max_diff(_weights(half), _weights(direct)) <= 1e-6


@pytest.mark.parametrize("rule_cls", [rules.RNNprop, rules.DMLSTM])
def test_fit_with_learned_rule_updates_weights_and_state(rule_cls):
    model = _fit(l2o_tf.LearnedOptimizer(rule_cls(seed=0)), steps=5)
    moved = _max_diff(_weights(model), _weights(_mlp(1)))
    assert 0 < moved <= 5 * 0.011  # each step moves a coordinate by at most output_scale (0.01)
    for variable in model.trainable_variables:
        state = model.optimizer.rule_state(variable).numpy()
        assert state.shape == (int(np.prod(variable.shape)), model.optimizer.rule.state_size)
        assert np.all(np.isfinite(state)) and np.abs(state).max() > 0


def test_fit_on_a_keras_application_model():
    """A model we did not write: MobileNetV3Small from keras.applications, no pretrained weights."""
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, include_preprocessing=False, minimalistic=True
    )
    # fused: one rule call for all 106 variables traces in half the time of per-variable calls.
    model.compile(optimizer=l2o_tf.LearnedOptimizer(rules.RNNprop(), fused=True), loss="sparse_categorical_crossentropy")
    gen = np.random.default_rng(0)
    x = gen.uniform(size=(16, 32, 32, 3)).astype("float32")
    y = gen.integers(0, 10, 16)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.optimizer.iterations.numpy() == 2
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_custom_loop_apply_gradients_in_tf_function_matches_eager():
    x, y = _data(64)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(compiled):
        model = _mlp(2)
        opt = l2o_tf.LearnedOptimizer(rules.RNNprop(seed=4))

        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        step = tf.function(step) if compiled else step
        for i in range(4):
            step(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        return _weights(model)

    assert _max_diff(train(True), train(False)) <= 1e-6


def test_fused_equals_per_variable():
    fused = _fit(l2o_tf.LearnedOptimizer(rules.RNNprop(seed=3), fused=True), steps=6)
    per_var = _fit(l2o_tf.LearnedOptimizer(rules.RNNprop(seed=3), fused=False), steps=6)
    assert _max_diff(_weights(fused), _weights(per_var)) <= 1e-6


@pytest.mark.parametrize("fused", [False, True])
def test_xla_rule_step_equals_the_plain_step(fused):
    """jit_compile (XLA's own tanh and fusions) changes rounding only."""
    plain = _weights(_fit(l2o_tf.LearnedOptimizer(rules.RNNprop(seed=3), fused=fused, jit_compile=False), steps=6))
    fast = _fit(l2o_tf.LearnedOptimizer(rules.RNNprop(seed=3), fused=fused, jit_compile=True), steps=6)
    assert _max_diff(_weights(fast), plain) <= 1e-6
    assert _max_diff(plain, _weights(_mlp(1))) > 1e-4  # it did train


def test_the_default_is_the_fastest_step_and_the_config_keeps_the_choice():
    """native_kernel="auto" / jit_compile="auto": the native kernel for a rule that has one on a CPU where it
    builds, else XLA; the config records "auto", not the resolution, so a saved optimizer picks the fastest
    path where it is loaded."""
    with pytest.warns(l2o_tf.optimizer.UntrainedRuleWarning):
        native = l2o_tf.LearnedOptimizer(rules.AdafacMLP())
    has_compiler = any(shutil.which(name) for name in ("c++", "g++", "clang++"))
    assert native.native_kernel == has_compiler and native.jit_compile != has_compiler
    assert native.get_config()["native_kernel"] == native.get_config()["jit_compile"] == "auto"
    assert l2o_tf.LearnedOptimizer.from_config(native.get_config()).native_kernel == has_compiler
    for rule in (rules.Adam(1e-3), rules.Hierarchical()):  # no native step: XLA
        plain = l2o_tf.LearnedOptimizer(rule)
        assert plain.jit_compile and not plain.native_kernel
    explicit = l2o_tf.LearnedOptimizer(rules.AdafacMLP(), jit_compile=True)  # an explicit choice wins over "auto"
    assert explicit.jit_compile and not explicit.native_kernel
    assert not l2o_tf.LearnedOptimizer(rules.Adam(1e-3), jit_compile=False).jit_compile
    with pytest.raises(ValueError, match="jit_compile must be 'auto', True or False, got 'yes'"):
        l2o_tf.LearnedOptimizer(rules.Adam(1e-3), jit_compile="yes")
    with pytest.raises(ValueError, match="native_kernel must be 'auto', True or False, got 'on'"):
        l2o_tf.LearnedOptimizer(rules.Adam(1e-3), native_kernel="on")


def test_a_kernel_that_does_not_build_falls_back_to_xla_with_a_warning(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(l2o_tf.kernels, "_library", None)
    with pytest.warns(UserWarning, match="native CPU kernel is unavailable.*runs compiled by XLA"):
        optimizer = l2o_tf.LearnedOptimizer(rules.DMLSTM(seed=1))
    assert optimizer.jit_compile and not optimizer.native_kernel


def test_get_config_from_config_round_trip():
    opt = l2o_tf.LearnedOptimizer(rules.DMLSTM(hidden_size=8, seed=5), learning_rate=0.5, clipnorm=1.0, fused=True,
                                  jit_compile=True)
    config = opt.get_config()
    clone = l2o_tf.LearnedOptimizer.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.rule, rules.DMLSTM) and clone.rule.hidden_size == 8
    assert clone.jit_compile
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, l2o_tf.LearnedOptimizer) and again.get_config() == config


@pytest.mark.parametrize("fused", [False, True])
def test_keras_file_round_trip_continues_exactly(tmp_path, fused):
    """Train, save .keras, load, train on: identical to never saving, with trained rule weights kept."""

    def make_optimizer():
        rule = rules.RNNprop(seed=7)
        gen = np.random.default_rng(11)
        for w in rule.trainable_weights:  # stand-in for meta-trained weights: not the seed's init
            w.assign(w.numpy() + 0.1 * gen.normal(size=w.shape).astype("float32"))
        return l2o_tf.LearnedOptimizer(rule, fused=fused)

    x, y = _data(160)
    uninterrupted = _mlp(3)
    uninterrupted.compile(make_optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    uninterrupted.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

    first = _mlp(3)
    first.compile(make_optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first.fit(x[:80], y[:80], batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "m.keras")
    first.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, l2o_tf.LearnedOptimizer)
    for a, b in zip(first.optimizer.rule.weights, loaded.optimizer.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert _max_diff([v.numpy() for v in first.optimizer.variables], [v.numpy() for v in loaded.optimizer.variables]) == 0
    loaded.fit(x[80:], y[80:], batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert loaded.optimizer.iterations.numpy() == 10
    assert _max_diff(_weights(loaded), _weights(uninterrupted)) <= 1e-6


@pytest.mark.parametrize("rule_cls", [rules.RNNprop, rules.DMLSTM])
def test_sparse_gradients_are_densified_exactly(rule_cls):
    def model_and_grads():
        keras.utils.set_random_seed(5)
        model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(20, 4), keras.layers.Flatten(), keras.layers.Dense(1)])
        ids = tf.constant([[1, 2, 3], [3, 4, 1]])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(ids) ** 2)
        return model, tape.gradient(loss, model.trainable_variables)

    sparse_model, sparse_grads = model_and_grads()
    assert isinstance(sparse_grads[0], tf.IndexedSlices)
    dense_model, dense_grads = model_and_grads()
    dense_grads = [tf.convert_to_tensor(g) for g in dense_grads]
    for model, grads in ((sparse_model, sparse_grads), (dense_model, dense_grads)):
        opt = l2o_tf.LearnedOptimizer(rule_cls(seed=1))
        for _ in range(3):
            opt.apply_gradients(zip(grads, model.trainable_variables))
    assert _max_diff(_weights(sparse_model), _weights(dense_model)) == 0
    # Embedding row 10 never gets a gradient.  DM-LSTM's LogAndSign(0) = (-1, 0) still drives its
    # LSTM, so the row moves as it would under a dense zero gradient; RNNprop's inputs are 0/eps = 0.
    unused_row = sparse_model.trainable_weights[0].numpy()[10]
    initial_row = _weights(model_and_grads()[0])[0][10]
    assert np.array_equal(unused_row, initial_row) == (rule_cls is rules.RNNprop)


def test_mixed_float16_policy_trains_and_float16_variables_are_refused():
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = _fit(l2o_tf.LearnedOptimizer(rules.RNNprop()), steps=3)
        assert all(w.dtype == "float32" for w in model.trainable_weights)
        assert all(np.all(np.isfinite(w)) for w in _weights(model))
        keras.mixed_precision.set_global_policy("float16")
        with pytest.raises(TypeError, match="dtype float16.*mixed_float16"):
            _fit(l2o_tf.LearnedOptimizer(rules.RNNprop()), steps=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("fused", [False, True])
def test_skip_nonfinite_leaves_variables_and_state_alone(fused):
    variables = [tf.Variable([1.0, 2.0, 3.0]), tf.Variable([[0.5, -0.5]])]
    optimizer = l2o_tf.LearnedOptimizer(rules.RNNprop(seed=0, output_scale=0.1), skip_nonfinite=True, fused=fused)
    optimizer.apply_gradients(zip([tf.ones([3]), tf.ones([1, 2])], variables))
    before = [v.numpy().copy() for v in variables]
    states = [optimizer.rule_state(v).numpy().copy() for v in variables]
    optimizer.apply_gradients(zip([tf.constant([1.0, np.nan, 1.0]), tf.ones([1, 2])], variables))
    np.testing.assert_array_equal(variables[0].numpy(), before[0])
    np.testing.assert_array_equal(optimizer.rule_state(variables[0]).numpy(), states[0])
    assert int(optimizer.skipped_updates.numpy()) >= 1
    if not fused:  # per variable: the finite variable still steps
        assert not np.array_equal(variables[1].numpy(), before[1])
    optimizer.apply_gradients(zip([tf.ones([3]), tf.ones([1, 2])], variables))
    assert np.all(np.isfinite(variables[0].numpy())) and not np.array_equal(variables[0].numpy(), before[0])

    unguarded = l2o_tf.LearnedOptimizer(rules.RNNprop(seed=0, output_scale=0.1))
    v = tf.Variable([1.0, 2.0, 3.0])
    unguarded.apply_gradients([(tf.constant([1.0, np.nan, 1.0]), v)])
    assert np.isnan(v.numpy()).any()  # without the guard NaNs propagate, as with Keras optimizers


def test_rejects_non_rule():
    with pytest.raises(TypeError, match="needs an l2o_tf.rules.UpdateRule"):
        l2o_tf.LearnedOptimizer(keras.optimizers.Adam())


def test_fused_with_a_variable_without_gradient():
    """Filtered (None) gradients: the fused path updates only the others, exactly as per-variable does."""
    results = []
    for fused in (False, True):
        variables = [tf.Variable([1.0, 2.0]), tf.Variable([3.0]), tf.Variable([[4.0, 5.0]])]
        optimizer = l2o_tf.LearnedOptimizer(rules.DMLSTM(seed=1), fused=fused)
        optimizer.build(variables)
        for step in range(3):
            grads = [tf.constant([0.1, -0.2]), None if step == 1 else tf.constant([0.3]), tf.constant([[0.5, 0.6]])]
            optimizer.apply_gradients(zip(grads, variables))
        results.append([v.numpy() for v in variables] + [optimizer.rule_state(v).numpy() for v in variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_weight_decay_follows_keras_for_the_adam_rule_and_the_nominal_step_for_learned_rules():
    """Keras decays by lr * wd per step; a rule's lr is its nominal step (learned: output_scale)."""
    def decayed(optimizer, steps=4):
        v = tf.Variable([1.0, -2.0, 3.0])
        for _ in range(steps):
            optimizer.apply_gradients([(tf.constant([0.1, 0.2, -0.3]), v)])
        return v.numpy()

    ours = decayed(l2o_tf.LearnedOptimizer(rules.Adam(1e-3), weight_decay=0.01))
    np.testing.assert_allclose(ours, decayed(keras.optimizers.Adam(1e-3, weight_decay=0.01)), atol=1e-7)
    rule = rules.RNNprop(seed=2, output_scale=0.05)
    assert rule.nominal_step == 0.05 and rules.SGD(0.3).nominal_step == 0.3
    # The decay of a learned rule is the same multiplicative shrink as Keras's: x *= 1 - lr * wd * nominal.
    with_decay = l2o_tf.LearnedOptimizer(rule, weight_decay=0.2, learning_rate=0.5)
    without = l2o_tf.LearnedOptimizer(rules.RNNprop(seed=2, output_scale=0.05), learning_rate=0.5)
    v, w = tf.Variable([1.0, -2.0, 3.0]), tf.Variable([1.0, -2.0, 3.0])
    with_decay.apply_gradients([(tf.constant([0.1, 0.2, -0.3]), v)])
    without.apply_gradients([(tf.constant([0.1, 0.2, -0.3]), w)])
    shrink = 1 - 0.5 * 0.2 * 0.05
    np.testing.assert_allclose(v.numpy(), w.numpy() - np.array([1.0, -2.0, 3.0]) * (1 - shrink), atol=1e-6)


def test_an_untrained_learned_rule_warns_once_and_a_trained_one_does_not():
    import warnings  # noqa: PLC0415

    with pytest.warns(l2o_tf.optimizer.UntrainedRuleWarning, match="random initialisation.*pretrained.load"):
        l2o_tf.LearnedOptimizer(rules.DMLSTM(seed=3))
    with pytest.warns(l2o_tf.optimizer.UntrainedRuleWarning, match="seed 4"):  # inside a wrapper too
        l2o_tf.LearnedOptimizer(rules.HypergradientScale(rules.AdafacMLP(seed=4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        l2o_tf.pretrained.load("dmlstm-mnist")
        l2o_tf.LearnedOptimizer(rules.HypergradientScale(l2o_tf.pretrained.load_rule("general")))
        l2o_tf.LearnedOptimizer(rules.Adam(1e-3))  # hand-designed rules have nothing to train


def test_config_carries_the_rule_weights_and_checks_their_shapes():
    optimizer = l2o_tf.pretrained.load("rnnprop-mnist")
    config = optimizer.get_config()
    assert len(config["rule_weights"]) == len(optimizer.rule.weights)
    bad = dict(config, rule_weights=config["rule_weights"][:-1])
    with pytest.raises(ValueError, match="rule_weights has"):
        l2o_tf.LearnedOptimizer.from_config(bad)
