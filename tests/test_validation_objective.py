"""The validation meta-objective (Metz et al. 2019): a split held out of the training data, scored in the unroll."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import rules, tasks
from l2o_tf.meta import UnrollConfig
from l2o_tf.meta import unroll as unroll_lib
from numerics import directional_fd_check, stateless_unroll


def _task(validation_examples=8, train_examples=None, n=40):
    """A 4-3 softmax regression on in-memory data whose example i has feature 0 equal to i (to trace splits)."""
    gen = np.random.default_rng(0)
    x = gen.normal(size=(n, 4)).astype("float32")
    x[:, 0] = np.arange(n)
    y = (gen.integers(0, 3, n)).astype("int32")

    def model_fn(seed):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed))])
        return model

    return tasks.KerasModelTask("tiny", model_fn, ((x, y), (x[:10], y[:10])),
                                keras.losses.SparseCategoricalCrossentropy(from_logits=True), batch_size=6,
                                train_examples=train_examples, validation_examples=validation_examples)


def test_validation_split_is_the_end_of_the_train_split_and_disjoint_from_training():
    task = _task(validation_examples=8, train_examples=20)
    train_ids = set(task._load()[0][:, 0].numpy().astype(int))
    assert train_ids == set(range(20))
    valid_ids = set()
    for step in range(30):
        x, _ = task.validation_batch(3, step)
        valid_ids |= set(x[:, 0].numpy().astype(int))
    assert valid_ids == set(range(32, 40))
    np.testing.assert_array_equal(task.validation_batch(3, 5)[0], task.validation_batch(3, 5)[0])
    assert not np.array_equal(task.validation_batch(3, 5)[0], task.validation_batch(4, 5)[0])
    metrics = task.evaluate(task.init_params(0))
    assert {"validation_loss", "validation_accuracy"} <= set(metrics)


def test_bad_validation_splits_are_named():
    with pytest.raises(ValueError, match="validation_examples=40 leaves no training examples"):
        _task(validation_examples=40)._load()
    with pytest.raises(ValueError, match="train_examples=35 .* once validation_examples=8 are held out"):
        _task(validation_examples=8, train_examples=35)._load()
    with pytest.raises(ValueError, match="'tiny' has no validation split"):
        _task(validation_examples=0).validation_batch(0, 0)
    with pytest.raises(ValueError, match="'quadratic' has no validation split"):
        tasks.quadratic().validation_batch(0, 0)
    with pytest.raises(ValueError, match="validation_weight must be in"):
        UnrollConfig(3, validation_weight=1.5)


def _unroll(weight, length=3):
    task = _task()
    rule = rules.Adam(learning_rate=0.1)
    params = task.init_params(0)
    return task, unroll_lib.unroll(task, rule, params, rule.initial_state(15), 0, 0,
                                   UnrollConfig(length, validation_weight=weight))


def test_validation_objective_scores_the_unrolled_parameters_on_validation_batches():
    task, result = _unroll(1.0, length=1)
    expected = task.loss(result.params, task.validation_batch(0, 1))
    assert float(result.meta_loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(result.losses[0]) == pytest.approx(float(task.loss(result.params, task.train_batch(0, 1))), rel=1e-6)
    (_, train), (_, valid), (_, mix) = _unroll(0.0), _unroll(1.0), _unroll(0.25)
    assert float(train.meta_loss) != pytest.approx(float(valid.meta_loss), rel=1e-3)
    assert float(mix.meta_loss) == pytest.approx(0.75 * float(train.meta_loss) + 0.25 * float(valid.meta_loss), rel=1e-5)
    np.testing.assert_allclose(train.losses, valid.losses, rtol=1e-6)  # the trajectory itself is the same


def test_run_scores_the_objective_the_unroll_scores():
    """Curriculum validation (``run`` with ``objective``) weighs the same losses as the meta-loss."""
    task, rule, config = _task(), rules.Adam(learning_rate=0.1), UnrollConfig(4, validation_weight=1.0)
    params, state = task.init_params(0), rule.initial_state(15)
    result = unroll_lib.unroll(task, rule, params, state, 0, 0, config)
    _, _, losses = unroll_lib.run(task, rule, params, state, 0, 0, 5, objective=config)
    assert float(tf.reduce_mean(losses[1:])) == pytest.approx(float(result.meta_loss), rel=1e-5)


def test_validation_meta_gradient_matches_finite_differences():
    task = _task()
    rule = rules.RNNprop(hidden_size=3, num_layers=1, output_scale=0.05, seed=1)
    params, state = task.init_params(0), rule.initial_state(15)
    config = UnrollConfig(3, validation_weight=1.0)
    directional_fd_check(lambda w: stateless_unroll(rule, w, task, params, state, config).meta_loss,
                         [w.value for w in rule.trainable_weights], eps=1e-2, rtol=5e-2, atol=1e-4)


def test_meta_training_on_the_validation_objective(tmp_path):
    """--meta_objective=validation holds the split out of the task's training data, and says when it cannot."""
    from l2o_tf.meta import MetaTrainConfig, MetaTrainer  # noqa: PLC0415

    common = dict(rule="rnnprop", rule_kwargs={"hidden_size": 3, "output_scale": 0.05}, unroll=2, curriculum=(4,),
                  meta_steps=2, validate_every=2, validation_seeds=1, checkpoint_every=1000)
    config = MetaTrainConfig.from_flat(task="mnist_mlp", task_kwargs={"batch_size": 8}, meta_objective="validation",
                                       validation_examples=500, **common)
    trainer = MetaTrainer(config, str(tmp_path / "run"))
    assert trainer.tasks[0].validation_examples == 500
    trainer.train(verbose=0)
    assert np.isfinite(trainer.validate())
    with pytest.raises(ValueError, match="meta_objective=validation needs a validation split .* 'quadratic'"):
        MetaTrainer(MetaTrainConfig.from_flat(task="quadratic", meta_objective="validation", **common), str(tmp_path / "q"))
    with pytest.raises(ValueError, match="meta_objective=mix needs 0 < validation_weight < 1"):
        MetaTrainConfig.from_flat(task="mnist_mlp", meta_objective="mix", validation_weight=1.0, **common)
