"""Optimizee tasks: gradients against finite differences, closed forms, determinism, held-out evaluation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import tasks
from numerics import directional_fd_check

TINY = {
    "quadratic": dict(batch_size=2, dim=3),
    "lasso": dict(dim=4, init_stddev=1.0),
    "rosenbrock": dict(batch_size=2, dim=3, sigma=0.5),
    "rastrigin": dict(batch_size=2, dim=3, sigma=0.3),
    "mnist_mlp": dict(batch_size=8),
    "mnist_mlp_relu": dict(batch_size=8),
    "mnist_mlp_deep": dict(batch_size=8),
    "mnist_mlp_tanh": dict(batch_size=8),
    "mnist_mlp_elu": dict(batch_size=8),
    "mnist_mlp_wide": dict(batch_size=8),
    "mnist_conv": dict(batch_size=4, filters=(2, 3)),
    "cifar_conv": dict(batch_size=4, filters=(2, 3)),
}


def test_every_named_task_is_covered():
    assert sorted(TINY) == tasks.names()


SYNTHETIC = ("quadratic", "lasso", "rosenbrock", "rastrigin")


@pytest.fixture
def float64_keras():
    """Keras models in float64, so that finite differences are not drowned by float32 rounding."""
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_task_gradients_match_finite_differences(name):
    task = tasks.get(name, **TINY[name])
    batch = task.train_batch(1, 0)
    directional_fd_check(lambda p: task.loss(p, batch), task.init_params(1), eps=1e-2, rtol=2e-2)


@pytest.mark.parametrize("name", sorted(set(TINY) - set(SYNTHETIC)))
def test_image_task_gradients_match_finite_differences(name, float64_keras):
    task = tasks.get(name, **TINY[name])
    params = task.init_params(1)
    assert params[0].dtype == tf.float64
    # Biases start at 0 and MNIST background pixels are 0, so ReLUs sit exactly on their kink at
    # initialisation; check the gradient at a nearby generic point instead.
    gen = np.random.default_rng(2)
    params = [p + 0.01 * gen.normal(size=p.shape) for p in params]
    x, y = task.train_batch(1, 0)
    batch = (tf.cast(x, tf.float64), y)
    directional_fd_check(lambda p: task.loss(p, batch), params, eps=1e-5, rtol=1e-5, atol=1e-9)


def test_quadratic_and_lasso_closed_forms():
    quad = tasks.quadratic(batch_size=3, dim=4)
    (x,) = quad.init_params(0)
    w, y = (t.numpy() for t in quad.train_batch(0))
    expected = np.mean(np.sum((np.einsum("brd,bd->br", w, x.numpy()) - y) ** 2, axis=1))
    np.testing.assert_allclose(float(quad.loss([x], (w, y))), expected, rtol=1e-5)

    lasso = tasks.lasso(dim=5, sigma=2.0, l1=0.1, init_stddev=1.0)
    (x,) = lasso.init_params(3)
    w, y = (t.numpy() for t in lasso.train_batch(3))
    assert np.isclose(w.std(), 2.0, rtol=0.35)
    expected = 0.5 * np.sum((w[0] @ x.numpy()[0] - y[0]) ** 2) + 0.1 * np.abs(x.numpy()).sum()
    np.testing.assert_allclose(float(lasso.loss([x], (w, y))), expected, rtol=1e-5)
    assert float(tasks.lasso().init_params(0)[0].numpy().std()) == 0.0  # M-L2O starts LASSO at x = 0


def test_optima_satisfy_optimality_conditions():
    quad = tasks.quadratic(batch_size=2, dim=3)
    assert quad.optimum(0) == pytest.approx(0.0, abs=1e-9)  # square W: exact solution
    lasso = tasks.lasso(dim=6, num_rows=4, sigma=1.0, l1=0.1)
    x = lasso.solution(1)[0]
    w, y = (t.numpy().astype(np.float64)[0] for t in lasso.train_batch(1))
    grad = w.T @ (w @ x - y)  # gradient of the smooth part 1/2 ||Wx - y||^2
    active = np.abs(x) > 1e-9
    assert active.any() and not active.all()  # 4 rows, 6 unknowns, lambda 0.1: a sparse solution
    np.testing.assert_allclose(grad[active], -0.1 * np.sign(x[active]), atol=1e-6)  # KKT, active set
    assert np.all(np.abs(grad[~active]) <= 0.1 + 1e-6)  # KKT, zeros
    expected = 0.5 * np.sum((w @ x - y) ** 2) + 0.1 * np.abs(x).sum()
    assert lasso.optimum(1) == pytest.approx(expected, rel=1e-12)


def test_rosenbrock_and_rastrigin_minima():
    rosen = tasks.Rosenbrock(batch_size=2, dim=4)
    assert float(rosen.loss([tf.ones([2, 4])], ())) == 0.0
    assert float(rosen.loss([tf.zeros([2, 4])], ())) == pytest.approx(3.0)
    rast = tasks.Rastrigin(batch_size=2, dim=3)
    assert float(rast.loss([tf.zeros([2, 3])], ())) == pytest.approx(0.0, abs=1e-5)
    assert float(rast.loss([tf.ones([2, 3])], ())) == pytest.approx(3.0, abs=1e-4)


def test_mnist_mlp_is_the_l2l_network():
    task = tasks.mnist_mlp()
    shapes = [tuple(p.shape) for p in task.init_params(0)]
    assert shapes == [(784, 20), (20,), (20, 10), (10,)]
    x, y = task.train_batch(0, 0)
    assert x.shape == (128, 28, 28, 1) and y.shape == (128,)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    activations = [layer.activation.__name__ for layer in task.template.layers if hasattr(layer, "activation")]
    assert activations == ["sigmoid", "linear"]


@pytest.mark.parametrize("name", ["quadratic", "mnist_mlp"])
def test_seeds_are_deterministic_and_distinct(name):
    task = tasks.get(name, **TINY[name])
    for a, b in zip(task.init_params(4), task.init_params(4)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(task.init_params(4)[0].numpy(), task.init_params(5)[0].numpy())
    eager = task.train_batch(4, 7)
    graph = tf.function(task.train_batch)(tf.constant(4, tf.int64), tf.constant(7, tf.int64))
    for a, b in zip(eager, graph):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(eager[0].numpy(), task.train_batch(4, 8)[0].numpy()) or name == "quadratic"
    assert not np.array_equal(eager[0].numpy(), task.train_batch(5, 7)[0].numpy())


def test_evaluate_scores_the_held_out_split():
    """Train labels are all 0, test labels all 1: a model predicting 0 is right on train, wrong on test."""
    x = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    data = ((x, np.zeros(50, "int32")), (x[:20], np.ones(20, "int32")))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    task = tasks.from_keras_model(model, data, keras.losses.SparseCategoricalCrossentropy(from_logits=True), batch_size=5)
    params = [tf.zeros([3, 2]), tf.constant([5.0, -5.0])]
    result = task.evaluate(params)
    assert result["test_accuracy"] == 0.0
    assert result["train_loss"] == pytest.approx(np.log1p(np.exp(-10.0)), rel=1e-3)
    assert result["test_loss"] == pytest.approx(10.0, rel=1e-3)


def test_from_keras_model_matches_the_model_and_reinitialises_by_seed(float64_keras):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(3)])
    gen = np.random.default_rng(1)
    data = ((gen.normal(size=(40, 5)), gen.integers(0, 3, 40)), (gen.normal(size=(10, 5)), gen.integers(0, 3, 10)))
    task = tasks.from_keras_model(
        model, data, "sparse_categorical_crossentropy", batch_size=8, preprocess=lambda x: tf.cast(x, tf.float64)
    )
    x = data[0][0][:8]
    params = [v.value for v in model.trainable_variables]
    np.testing.assert_allclose(task.predict(params, x).numpy(), model(x).numpy(), rtol=1e-6)
    a, b = task.init_params(3), task.init_params(3)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert not np.allclose(a[0].numpy(), model.trainable_variables[0].numpy())
    directional_fd_check(lambda p: task.loss(p, task.train_batch(0, 0)), a, eps=1e-5, rtol=1e-5, atol=1e-9)


def test_task_family_sampling_is_deterministic():
    family = tasks.family("lasso", [0.1, 0.5, 1.0], dim=4)
    sigmas = [family.sample(s).sigma for s in range(30)]
    assert sigmas == [family.sample(s).sigma for s in range(30)]
    assert set(sigmas) == {0.1, 0.5, 1.0}


def test_unknown_task_and_bad_arguments():
    with pytest.raises(ValueError, match="Unknown task 'mnist'.*mnist_mlp"):
        tasks.get("mnist")
    with pytest.raises(TypeError, match="Bad arguments for task 'lasso'"):
        tasks.get("lasso", width=3)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        tasks.get("lasso", sigma=0)


def test_train_examples_keeps_only_the_first_examples_for_training_and_the_whole_test_split():
    """The small-data regime: batches and the train loss see only the first examples; test is untouched."""
    x = np.arange(40, dtype="float32").reshape(20, 2)
    data = ((x, np.arange(20) % 2), (x[:7], np.zeros(7, "int64")))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    task = tasks.from_keras_model(model, data, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                  batch_size=64, train_examples=3)
    assert task.num_train == 3
    seen = np.unique(np.concatenate([task.train_batch(s, 0)[0].numpy()[:, 0] for s in range(5)]))
    np.testing.assert_array_equal(seen, [0.0, 2.0, 4.0])  # the first three rows, every one drawn
    assert task.sharpness_batch()[0].shape[0] == 3
    assert task._load()[2].shape[0] == 7  # evaluate still scores the whole test split
    with pytest.raises(ValueError, match="train_examples=21 but the train split .* has only 20"):
        tasks.from_keras_model(model, data, "sparse_categorical_crossentropy", train_examples=21).num_train
    with pytest.raises(ValueError, match="train_examples must be >= 1"):
        tasks.from_keras_model(model, data, "sparse_categorical_crossentropy", train_examples=0)
