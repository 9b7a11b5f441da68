"""Keras's own optimizer tests, run on LearnedOptimizer.

Part 1 runs Keras's test classes (``keras/src/optimizers/optimizer_test.py`` and
``loss_scale_optimizer_test.py``, as installed) with ``optimizers.SGD`` and
``optimizers.Adam`` standing for ``LearnedOptimizer`` over the SGD and Adam rules: Keras's
literal numbers must come out.  Tests of Keras optimizers that have no rule here (AdamW,
Lion...) are skipped; the auto-naming test is replaced by one with this class's names.

Part 2 runs the same features on learned rules (the shipped ``dmlstm-mnist`` and
``rnnprop-mnist``), where no literal number exists: each feature (clipping, EMA, gradient
accumulation, loss scaling, constraints, checkpoints, serialization) must give exactly what
the same optimizer gives on gradients transformed by hand.
"""

import pickle
import types
import unittest

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.optimizers import loss_scale_optimizer_test as keras_lso_test
from keras.src.optimizers import optimizer_test as keras_optimizer_test

import l2o_tf
from l2o_tf import rules


# -- Part 1: Keras's tests, SGD and Adam as rules --------------------------------------------
@keras.saving.register_keras_serializable(package="l2o_tf_conformance")
class SGD(l2o_tf.LearnedOptimizer):
    """``keras.optimizers.SGD``'s signature over ``rules.SGD``: the rule steps ``-g``, ``learning_rate`` scales it."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        # The rule (a Layer) is named apart: it would take the name "sgd" from the optimizer's auto-naming.
        super().__init__(rules.SGD(1.0, momentum, nesterov, name="sgd_rule"), learning_rate=learning_rate, **kwargs)

    def get_config(self):
        config = keras.optimizers.Optimizer.get_config(self)
        return dict(config, momentum=self.rule.momentum, nesterov=self.rule.nesterov)


@keras.saving.register_keras_serializable(package="l2o_tf_conformance")
class Adam(l2o_tf.LearnedOptimizer):
    """``keras.optimizers.Adam``'s signature over ``rules.Adam`` (its update is linear in the learning rate)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(rules.Adam(1.0, beta_1, beta_2, epsilon, name="adam_rule"), learning_rate=learning_rate,
                         **kwargs)

    def get_config(self):
        config = keras.optimizers.Optimizer.get_config(self)
        rule = self.rule
        return dict(config, beta_1=rule.beta_1, beta_2=rule.beta_2, epsilon=rule.epsilon)


_AS_RULES = {"sgd": SGD, "adam": Adam}


def _get(identifier):
    """``keras.optimizers.get`` with ``sgd`` and ``adam`` resolved to the rule-backed classes."""
    if isinstance(identifier, str) and identifier.lower() in _AS_RULES:
        return _AS_RULES[identifier.lower()]()
    if isinstance(identifier, dict) and identifier.get("class_name", "").lower() in _AS_RULES:
        return _AS_RULES[identifier["class_name"].lower()](**identifier.get("config", {}))
    return keras.optimizers.get(identifier)


_SHIM = types.SimpleNamespace(**{name: getattr(keras.optimizers, name) for name in dir(keras.optimizers)
                                 if not name.startswith("_")})
_SHIM.SGD, _SHIM.Adam, _SHIM.get = SGD, Adam, _get


@pytest.fixture(autouse=True)
def _keras_tests_use_rules(monkeypatch):
    monkeypatch.setattr(keras_optimizer_test, "optimizers", _SHIM)
    monkeypatch.setattr(keras_lso_test, "SGD", SGD)


_NOT_RULES = "a Keras optimizer that has no l2o_tf rule"


class TestKerasOptimizerSuiteOnRules(keras_optimizer_test.OptimizerTest):
    # The parameterized tests run over 11 Keras optimizers; index 0 is adam and 1 sgd.
    for _i in range(2, 11):
        locals()[f"test_gradient_accumulation_with_weigth_decay{_i}"] = unittest.skip(_NOT_RULES)(lambda self: None)
        locals()[f"test_pickleable_optimizers{_i}"] = unittest.skip(_NOT_RULES)(lambda self: None)
    del _i

    def test_get_method(self):
        self.assertIsInstance(_get("sgd"), SGD)
        self.assertIsNone(_get(None))
        with self.assertRaises(ValueError):
            _get("typo")

    def test_optimizer_auto_naming(self):
        """Keras's test with this class's names (AdamW has no rule)."""
        keras.backend.clear_session()  # names count from a fresh naming scope
        first, second = SGD(), SGD()
        self.assertEqual((first.name, second.name), ("sgd", "sgd_1"))
        self.assertEqual(Adam().name, "adam")
        self.assertEqual(SGD(name="my_sgd").name, "my_sgd")
        self.assertEqual(keras.optimizers.deserialize(keras.optimizers.serialize(second)).name, "sgd_1")


class TestKerasLossScaleSuiteOnRules(keras_lso_test.LossScaleOptimizerTest):
    pass


def test_the_keras_suites_ran():
    """The classes above must hold Keras's tests, not nothing (a Keras without them fails here)."""
    names = [n for n in dir(TestKerasOptimizerSuiteOnRules) if n.startswith("test_")]
    assert len(names) >= 30 and "test_ema" in names and "test_gradient_accumulation" in names
    assert "test_upscaling_stateful" in dir(TestKerasLossScaleSuiteOnRules)


# -- Part 2: the same features on learned rules ----------------------------------------------
LEARNED = ["dmlstm-mnist", "rnnprop-mnist"]
V0 = [[1.0, 2.0], [3.0, 4.0]]
G = [[0.5, -1.0], [2.0, 0.25]]


def _learned(shipped, **kwargs):
    return l2o_tf.pretrained.load(shipped, **kwargs)


def _steps(optimizer, grads_list, v0=V0):
    v = keras.Variable(v0)
    for grads in grads_list:
        optimizer.apply_gradients([(tf.constant(grads, tf.float32), v)])
    return v.numpy()


@pytest.fixture(params=LEARNED)
def learned(request):
    return request.param


def test_iterations_counter(learned):
    optimizer = _learned(learned)
    _steps(optimizer, [G, G])
    assert int(optimizer.iterations) == 2


def test_empty_gradients(learned):
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        _learned(learned).apply_gradients([(None, keras.Variable(V0))])
    v, v2 = keras.Variable(V0), keras.Variable(V0)
    with pytest.warns(UserWarning):
        _learned(learned).apply_gradients([(None, v), (tf.constant(G), v2)])
    np.testing.assert_array_equal(v.numpy(), V0)
    np.testing.assert_array_equal(v2.numpy(), _steps(_learned(learned), [G]))


@pytest.mark.parametrize("clip, clipped", [
    (dict(clipnorm=0.1), lambda g: g * 0.1 / np.linalg.norm(g)),
    (dict(clipvalue=0.3), lambda g: np.clip(g, -0.3, 0.3)),
    (dict(global_clipnorm=0.1), lambda g: g * 0.1 / np.linalg.norm(g)),
])
def test_clipping_equals_clipped_gradients(learned, clip, clipped):
    g = np.asarray(G, np.float32)
    np.testing.assert_allclose(_steps(_learned(learned, **clip), [G, G]),
                               _steps(_learned(learned), [clipped(g)] * 2), atol=1e-7)


def test_only_one_clip_argument(learned):
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`"):
        _learned(learned, clipnorm=0.1, clipvalue=0.1)


def test_ema(learned):
    """EMA of the weights, overwritten into them every 3rd step, as Keras's own test."""
    optimizer = _learned(learned, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)
    twin = _learned(learned)
    v, w = keras.Variable(V0), keras.Variable(V0)
    average = None
    for step in range(1, 4):
        optimizer.apply_gradients([(tf.constant(G), v)])
        twin.apply_gradients([(tf.constant(G), w)])
        average = w.numpy() if average is None else 0.9 * average + 0.1 * w.numpy()
        np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), average, atol=1e-6)
        np.testing.assert_allclose(v.numpy(), average if step == 3 else w.numpy(), atol=1e-6)


def test_ema_with_model_fit(learned):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)])
    optimizer = _learned(learned, use_ema=True, ema_momentum=0.9)
    model.compile(loss="mse", optimizer=optimizer, run_eagerly=True)
    model.fit(np.ones((1, 1), "float32"), np.zeros((1, 2), "float32"), batch_size=1, epochs=2, verbose=0)
    kernel = model.trainable_variables[0].numpy()
    np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), kernel, atol=1e-6)
    assert np.all(kernel < 1.0)  # it trained towards 0


def test_constraints_are_applied(learned):
    v = keras.Variable(np.random.default_rng(0).random((2, 2)) - 1.0)
    v.constraint = keras.constraints.NonNeg()
    _learned(learned).apply_gradients([(tf.zeros((2, 2)), v)])
    assert float(v.numpy().min()) == 0.0


def test_static_loss_scaling(learned):
    scaled = _learned(learned, loss_scale_factor=1024.0)
    assert float(scaled.scale_loss(1.0)) == 1024.0
    g = np.asarray(G, np.float32)
    np.testing.assert_allclose(_steps(scaled, [g * 1024.0]), _steps(_learned(learned), [g]), atol=1e-7)


def test_set_weights(learned):
    x = keras.Variable(V0)
    first = _learned(learned)
    first.apply_gradients([(tf.constant(G), x)])
    second = _learned(learned)
    with pytest.raises(ValueError, match="You are calling"):
        second.set_weights(first.variables)
    second.build([x])
    second.set_weights(first.variables)
    for a, b in zip(first.variables, second.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_gradient_accumulation(learned):
    """3 accumulated steps are one step on their mean; nothing moves in between."""
    accumulating = _learned(learned, gradient_accumulation_steps=3)
    v = keras.Variable(V0)
    grads = [np.asarray(G, np.float32) * s for s in (1.0, -0.5, 2.0)]
    for i, g in enumerate(grads):
        accumulating.apply_gradients([(tf.constant(g), v)])
        if i < 2:
            np.testing.assert_array_equal(v.numpy(), V0)
    assert int(accumulating.iterations) == 1
    np.testing.assert_allclose(v.numpy(), _steps(_learned(learned), [np.mean(grads, axis=0)]), atol=1e-7)


def test_gradient_accumulation_with_weight_decay(learned):
    """Keras's test: decay once per accumulated step, as without accumulation."""
    plain = _learned(learned, weight_decay=0.05)
    accumulating = _learned(learned, weight_decay=0.05, gradient_accumulation_steps=3)
    v1, v3 = keras.Variable([[0.9], [0.5]]), keras.Variable([[0.9], [0.5]])
    gen = np.random.default_rng(0)
    for _ in range(8):
        grads3 = gen.random([3, 2, 1]).astype("float32")
        plain.apply_gradients([(tf.constant(grads3.mean(axis=0)), v1)])
        for batch in range(3):
            accumulating.apply_gradients([(tf.constant(grads3[batch]), v3)])
    np.testing.assert_allclose(v1.numpy(), v3.numpy(), atol=1e-6)


def test_tf_checkpointing(learned):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    optimizer = _learned(learned)
    x, y = np.random.default_rng(1).random((2, 1, 2))
    model.compile(optimizer, "mse")
    model.train_on_batch(x, y)
    reference = model.predict(x, verbose=0)
    checkpoint = tf.train.Checkpoint(model, optimizer=optimizer)
    import tempfile  # noqa: PLC0415

    path = checkpoint.save(tempfile.mkdtemp() + "/ckpt")
    model.train_on_batch(x, y)
    assert not np.allclose(model.predict(x, verbose=0), reference, atol=1e-5)
    checkpoint.restore(path)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference, atol=1e-6)


def test_callable_learning_rate(learned):
    np.testing.assert_array_equal(_steps(_learned(learned, learning_rate=lambda: 0.5), [G]),
                                  _steps(_learned(learned, learning_rate=0.5), [G]))


def test_overwrite_with_gradient(learned):
    v, v2 = keras.Variable(V0), keras.Variable(V0)
    v.overwrite_with_gradient = True
    _learned(learned).apply_gradients([(tf.constant(G), v), (tf.constant(G), v2)])
    np.testing.assert_array_equal(v.numpy(), G)
    np.testing.assert_array_equal(v2.numpy(), _steps(_learned(learned), [G]))


def test_setting_lr_to_a_schedule_untracks_the_lr_variable(learned):
    optimizer = _learned(learned)
    assert len(optimizer.variables) == 2
    optimizer.learning_rate = keras.optimizers.schedules.PolynomialDecay(1.0, 4)
    assert len(optimizer.variables) == 1


def test_pickle_keeps_config_and_rule_weights(learned):
    optimizer = _learned(learned)
    reloaded = pickle.loads(pickle.dumps(optimizer))
    assert reloaded.get_config() == optimizer.get_config()
    np.testing.assert_array_equal(_steps(reloaded, [G, G]), _steps(_learned(learned), [G, G]))


def test_mixed_with_tf_variables(learned):
    optimizer = _learned(learned)
    v, tf_v = keras.Variable(V0), tf.Variable(V0)
    optimizer.apply_gradients([(tf.constant(G), v), (tf.constant(G), tf_v)])
    assert int(optimizer.iterations) == 1
    with pytest.warns(UserWarning, match="Gradients do not exist for variables"):
        optimizer.apply_gradients([(tf.constant(G), v), (None, tf_v)])
    assert int(optimizer.iterations) == 2


def test_auto_naming():
    keras.backend.clear_session()
    first, second = _learned("dmlstm-mnist"), _learned("dmlstm-mnist")
    assert (first.name, second.name) == ("learned_optimizer", "learned_optimizer_1")
    assert _learned("dmlstm-mnist", name="mine").name == "mine"
    assert keras.optimizers.deserialize(keras.optimizers.serialize(second)).name == "learned_optimizer_1"


@pytest.mark.parametrize("round_trip", [
    lambda o: type(o).from_config(o.get_config()),
    lambda o: keras.optimizers.deserialize(keras.optimizers.serialize(o)),
    lambda o: keras.optimizers.get(keras.optimizers.serialize(o)),
    lambda o: keras.optimizers.LossScaleOptimizer.from_config(
        keras.optimizers.LossScaleOptimizer(o).get_config()).inner_optimizer,
], ids=["from_config", "serialize", "get", "loss_scale_from_config"])
def test_config_round_trips_keep_the_meta_trained_weights(learned, round_trip):
    optimizer = _learned(learned)
    clone = round_trip(optimizer)
    for a, b in zip(optimizer.rule.weights, clone.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(_steps(clone, [G, G]), _steps(_learned(learned), [G, G]))


def test_loss_scale_optimizer_finite_and_infinite_steps(learned):
    optimizer = keras.optimizers.LossScaleOptimizer(_learned(learned))
    g = np.asarray([1.0, 6.0, 7.0, 2.0], np.float32)
    v = keras.Variable([1.0, 2.0, 3.0, 4.0])
    optimizer.apply([tf.constant(g) * optimizer.initial_scale], [v])
    np.testing.assert_allclose(v.numpy(), _steps(_learned(learned), [g], v0=[1.0, 2.0, 3.0, 4.0]), atol=1e-6)
    before = v.numpy()
    optimizer.apply([tf.constant([np.inf] * 4)], [v])
    np.testing.assert_array_equal(v.numpy(), before)
    assert float(optimizer.scale_loss(1.0)) == optimizer.initial_scale / 2
