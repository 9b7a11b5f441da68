"""The general task family: seeds to tasks, augmentations that keep the problem, heterogeneous members in the trainer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import tasks
from l2o_tf.meta import MetaTrainConfig, MetaTrainer
from l2o_tf.tasks import augment, general, text


def test_a_sampled_task_is_a_pure_function_of_its_seed_and_the_family_is_broad():
    assert [general.sample(s) for s in range(40)] == [general.sample(s) for s in range(40)]
    configs = [general.sample(s) for s in range(200)]
    assert {c.kind for c in configs} == set(general.KINDS)
    images = [c for c in configs if c.kind in ("mlp", "conv", "autoencoder")]
    assert {c.dataset for c in images} == set(general.DATASETS)
    assert {c.resolution for c in images} == set(general.RESOLUTIONS)
    assert {c.activation for c in images if c.kind == "mlp"} == set(general.ACTIVATIONS)
    assert {len(c.hidden) for c in configs if c.kind == "mlp"} == {1, 2, 3, 4}
    assert {c.batch_norm for c in configs if c.kind == "conv"} == {True, False}
    assert {c.cell for c in configs if c.kind == "char_rnn"} == {"lstm", "gru"}
    assert min(c.batch_size for c in configs) == 16 and max(c.batch_size for c in configs) == 512
    assert 0.2 < np.mean([c.param_decades > 0 for c in configs]) < 0.5
    assert 0.2 < np.mean([c.gradient_noise > 0 for c in configs]) < 0.5
    assert len({c.name for c in configs}) == len(configs)


# Tiny members of every kind (the sampler's sizes are for meta-training, not for tests).
TINY = [
    general.TaskConfig("mlp", 1, dataset="mnist", resolution=8, batch_size=16, hidden=(8, 8), activation="gelu"),
    general.TaskConfig("conv", 2, dataset="cifar10", resolution=8, batch_size=16, hidden=(4,), batch_norm=True),
    general.TaskConfig("autoencoder", 3, dataset="mnist", resolution=8, batch_size=16, hidden=(16, 8)),
    general.TaskConfig("char_rnn", 4, batch_size=4, hidden=(8,), cell="gru", seq_len=8),
    general.TaskConfig("transformer_lm", 5, batch_size=4, hidden=(8,), seq_len=8),
]


@pytest.mark.parametrize("config", TINY, ids=lambda c: c.kind)
def test_every_kind_builds_a_deterministic_trainable_task(config):
    task = general.build(config)
    params, again = task.init_params(3), task.init_params(3)
    for a, b in zip(params, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(float(tf.reduce_max(tf.abs(a - b))) > 0 for a, b in zip(params, task.init_params(4)))
    batch = task.train_batch(0, 0)
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = task.loss(params, batch)
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, params)]  # embeddings: IndexedSlices
    assert np.isfinite(float(loss))
    # Plain gradient steps lower the loss on a fixed batch: the task is a real optimisation problem.
    lowered = [p - 0.05 * g / (tf.norm(g) + 1e-12) for p, g in zip(params, grads)]
    assert float(task.loss(lowered, batch)) < float(loss)
    metrics = task.evaluate(params)
    assert np.isfinite(metrics["test_loss"])
    if config.kind == "autoencoder":
        assert np.isnan(metrics["test_accuracy"])
    else:
        assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_a_member_first_used_inside_a_tf_function_loads_its_data_eagerly():
    """A resumed run may validate on a member before training touched it: its first batch is drawn while the
    validation unroll traces, and the loader (area resizing, ``.numpy()``) must still run eagerly."""
    task = general.build(TINY[2])
    x, y = tf.function(lambda: task.train_batch(0, 0))()
    assert x.shape == (16, 8, 8, 1) and y.shape == (16, 8, 8, 1)
    # The template model that computes the loss is built while tracing too, and (one tf.function serving every
    # member, as the trainer's validation does) not on that function's first trace.
    loss = tf.function(lambda member, params: member.loss(params, member.train_batch(0, 0)))
    for member in (general.build(TINY[0]), general.build(TINY[2])):
        params = member.init_params(0)
        assert float(loss(member, params)) == pytest.approx(float(member.loss(params, member.train_batch(0, 0))), rel=1e-5)


def test_language_models_read_the_bundled_corpus_and_predict_the_next_character():
    windows = text.char_windows(8)
    np.testing.assert_array_equal(windows.x_train[0, 1:], windows.y_train[0, :-1])
    assert windows.x_train.max() < text.VOCAB_SIZE and "pydoc_data" in windows.source
    task = general.build(TINY[4])
    assert "pydoc_data" in task.data_source
    # Untrained: the cross-entropy is close to log(vocabulary).
    assert abs(task.evaluate(task.init_params(0))["test_loss"] - np.log(text.VOCAB_SIZE)) < 0.5


def test_batch_statistics_normalise_by_the_batch_as_fit_does():
    task = general.build(TINY[1])
    params, (x, _) = task.init_params(0), task.train_batch(0, 0)
    model = task.template
    expected, _ = model.stateless_call(params, [v.value for v in model.non_trainable_variables], x, training=True)
    np.testing.assert_allclose(task.predict(params, x).numpy(), expected.numpy(), rtol=1e-6)
    inference, _ = model.stateless_call(params, [v.value for v in model.non_trainable_variables], x, training=False)
    assert float(tf.reduce_max(tf.abs(expected - inference))) > 1e-3


def test_reparametrisation_keeps_the_function_and_rescales_parameters_and_gradients():
    inner = general.build(TINY[0])
    task = augment.Reparametrized(inner, [10.0 ** (j - 2) for j in range(len(inner.init_params(0)))])
    stored, batch = task.init_params(0), inner.train_batch(0, 0)
    for p, q, s in zip(stored, inner.init_params(0), task.scales):
        np.testing.assert_allclose(p.numpy() * s, q.numpy(), rtol=1e-6)
    np.testing.assert_allclose(float(task.loss(stored, batch)), float(inner.loss(inner.init_params(0), batch)), rtol=1e-5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(stored)
        outer = task.outer(stored)
        tape.watch(outer)
        loss = inner.loss(outer, batch)
    for g, h, s in zip(tape.gradient(loss, stored), tape.gradient(loss, outer), task.scales):
        np.testing.assert_allclose(g.numpy(), s * h.numpy(), rtol=1e-4, atol=1e-7)
    drawn = augment.Reparametrized.log_uniform(inner, seed=1, decades=3)
    assert drawn.scales == augment.Reparametrized.log_uniform(inner, seed=1, decades=3).scales
    assert all(1e-3 <= s <= 1e3 for s in drawn.scales) and max(drawn.scales) / min(drawn.scales) > 10


def test_gradient_noise_changes_what_the_optimizer_sees_not_the_loss():
    inner = general.build(TINY[0])
    task = augment.GradientNoise(inner, 0.5)
    params = inner.init_params(0)
    batch = task.train_batch(2, 7)
    assert float(task.loss(params, batch)) == float(inner.loss(params, inner.train_batch(2, 7)))
    zeros = [tf.zeros_like(p) for p in params]
    noise = task.observed_gradients(zeros, batch)
    flat = np.concatenate([n.numpy().ravel() for n in noise])
    assert abs(flat.std() - 0.5) < 0.05 and abs(flat.mean()) < 0.05
    np.testing.assert_array_equal(flat, np.concatenate([n.numpy().ravel() for n in task.observed_gradients(zeros, batch)]))
    other = task.observed_gradients(zeros, task.train_batch(2, 8))
    assert float(tf.reduce_max(tf.abs(other[0] - noise[0]))) > 0  # fresh noise every step


def _family_config(**overrides):
    options = dict(rule="adafac_mlp", unroll=2, curriculum=(4,), meta_steps=6, meta_lr=1e-3, validate_every=3,
                   validation_seeds=2, checkpoint_every=1000, relative_loss=True, log_loss=True)
    options.update(overrides)
    return MetaTrainConfig.from_flat(**options)


def test_members_of_different_sizes_train_in_turn_and_resume_exactly(tmp_path):
    """A family of an image MLP and a user's Keras model (from_keras_model): both trace once, a resume is exact."""
    family = _two_sizes()

    reference = MetaTrainer(_family_config(), str(tmp_path / "reference"), task=family)
    assert reference.num_coordinates(0) != reference.num_coordinates(1)
    reference.train(verbose=0)
    assert [reference._step_function(m, False).experimental_get_tracing_count() for m in range(2)] == [1, 1]
    stopped = MetaTrainer(_family_config(meta_steps=3, checkpoint_every=3), str(tmp_path / "run"), task=family)
    stopped.train(verbose=0)
    resumed = MetaTrainer(_family_config(), str(tmp_path / "run"), task=family)
    resumed.train(verbose=0)
    for a, b in zip(reference.rule.weights, resumed.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(reference.params.numpy(), resumed.params.numpy())


def test_the_general_family_flag():
    config = _family_config(task_family=("general",), family_size=3)
    assert config.task_family == ("general",)
    assert MetaTrainConfig.from_flat(task_family=("0.1", "1")).task_family == (0.1, 1.0)
    with pytest.raises(ValueError, match="task_family must be 'general', a list of sigmas or a list of task names"):
        MetaTrainConfig.from_flat(task_family=("broad",))
    assert [t.name for t in MetaTrainer._tasks(config, None)] == [general.sample(s).name for s in range(3)]


def test_a_family_of_named_tasks_shares_the_task_kwargs_and_keeps_each_architecture():
    """``--task_family=mnist_mlp,mnist_mlp_tanh,mnist_mlp_elu,mnist_mlp_wide``: the members in order, each computing
    its own activation and width, every one holding the validation split the validation meta-objective needs."""
    names = ("mnist_mlp", "mnist_mlp_tanh", "mnist_mlp_elu", "mnist_mlp_wide")
    config = MetaTrainConfig.from_flat(task_family=names, task_kwargs={"batch_size": 8, "train_examples": 64},
                                       meta_objective="validation", validation_examples=32)
    assert config.task_family == names
    members = MetaTrainer._tasks(config, None)
    assert [t.name for t in members] == list(names)
    assert [tuple(t.init_params(0)[0].shape) for t in members] == [(784, 20)] * 3 + [(784, 40)]
    x, _ = members[0].train_batch(0, 0)
    flat = tf.reshape(x, [x.shape[0], -1])
    for member, activation in zip(members, [tf.sigmoid, tf.tanh, tf.nn.elu, tf.sigmoid]):
        w1, b1, w2, b2 = member.init_params(0)
        np.testing.assert_allclose(member.predict([w1, b1, w2, b2], x).numpy(),
                                   (activation(flat @ w1 + b1) @ w2 + b2).numpy(), rtol=1e-5, atol=1e-6)
        assert member.num_train == 64 and member.validation_batch(0, 0)[0].shape[0] == 8
    with pytest.raises(ValueError, match="Unknown task 'bogus' in the family"):
        tasks.named_family(["mnist_mlp", "bogus"])


def test_a_validation_that_leaves_out_family_members_says_which_it_covers(tmp_path, caplog):
    """Validation takes a family's members in turn, one per held-out seed: with fewer seeds than members it scores only
    the first members, and the trainer says so (the round-5 family arm validated 2 of its 4 MLPs without a word)."""
    names = ("mnist_mlp", "mnist_mlp_tanh", "mnist_mlp_elu")
    kwargs = dict(task_family=names, task_kwargs={"batch_size": 8, "train_examples": 64})
    with caplog.at_level("WARNING"):
        MetaTrainer(_family_config(validation_seeds=2, **kwargs), str(tmp_path / "two"))
    (warning,) = [r.getMessage() for r in caplog.records if "Validation covers" in r.getMessage()]
    assert "members 0-1 of 3 only (mnist_mlp, mnist_mlp_tanh)" in warning and "--validation_seeds=3" in warning
    caplog.clear()
    with caplog.at_level("WARNING"):
        MetaTrainer(_family_config(validation_seeds=3, **kwargs), str(tmp_path / "three"))
    assert not [r for r in caplog.records if "Validation covers" in r.getMessage()]


def _two_sizes():
    """A family of two members of different sizes: a general-family MLP and a user's Keras regression."""
    gen = np.random.default_rng(0)
    x = gen.normal(size=(64, 5)).astype("float32")
    y = (x @ gen.normal(size=(5, 1))).astype("float32")
    user_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    user_task = tasks.from_keras_model(user_model, ((x, y), (x, y)), "mse", batch_size=8, name="user_regression")
    return general.family(size=0, extra_tasks=[general.build(TINY[0]), user_task])


def test_every_member_averages_the_meta_gradients_of_each_members_optimizees(tmp_path):
    """With every_member a meta step unrolls a group per member: its meta-gradient is the mean of the one each member's
    optimizee gives alone (the same seed, the same rule), not one member's per trajectory."""
    family = _two_sizes()
    together = MetaTrainer(_family_config(every_member=True, optimizees=2), str(tmp_path / "all"), task=family)
    together._new_optimizee()
    loss, grads = together.meta_gradient()
    alone = []
    for index, build in enumerate(family.builders):
        single = MetaTrainer(_family_config(optimizees=1), str(tmp_path / f"m{index}"), task=build())
        single.trajectory_index.assign(index)  # optimizee seed index = trajectory x batch: the group's seed
        single._new_optimizee()
        alone.append(single.meta_gradient())
    np.testing.assert_allclose(float(loss), np.mean([float(a[0]) for a in alone]), rtol=1e-5)
    for g, a, b in zip(grads, alone[0][1], alone[1][1]):
        np.testing.assert_allclose(g.numpy(), (a.numpy() + b.numpy()) / 2, rtol=1e-4, atol=1e-7)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(alone[0][1], alone[1][1])) > 1e-4  # members differ


def test_every_member_under_pes_draws_per_group_perturbations_and_resumes_exactly(tmp_path):
    family = _two_sizes()
    config = dict(every_member=True, optimizees=4, estimator="pes", es_sigma=0.01)
    reference = MetaTrainer(_family_config(**config), str(tmp_path / "reference"), task=family)
    reference.train(verbose=0)
    assert [f.experimental_get_tracing_count() for f in reference._compiled.values()] == [1]  # one step, both members
    stopped = MetaTrainer(_family_config(meta_steps=3, checkpoint_every=3, **config), str(tmp_path / "run"), task=family)
    stopped.train(verbose=0)  # mid-trajectory (length 4, unroll 2): the groups carry PES states
    first, second = (batch.estimator_state.numpy() for batch in stopped.batches)
    np.testing.assert_array_equal(first[0], -first[1])  # an antithetic pair within a group ...
    assert np.abs(first[0]).max() > 0 and np.abs(first[0] - second[0]).max() > 0  # ... and its own draw per group
    resumed = MetaTrainer(_family_config(**config), str(tmp_path / "run"), task=family)
    resumed.train(verbose=0)
    for a, b in zip(reference.rule.weights, resumed.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # TensorBoard has each member's meta-loss every step and its validation (one held-out seed each) every 3.
    tags = {}
    for path in (tmp_path / "reference" / "tensorboard").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    for member in ("member0_" + reference.tasks[0].name, "member1_user_regression"):
        assert tags[f"meta_loss/{member}"] == tags["meta_loss"] and tags[f"validation/{member}"] == [3, 6], tags
    mean = np.mean(list(reference.validation_by_member.values()))
    assert reference.validate() == pytest.approx(mean, rel=1e-6)
    for a, b in zip(reference.batches, resumed.batches):
        np.testing.assert_array_equal(a.params.numpy(), b.params.numpy())
        np.testing.assert_array_equal(a.estimator_state.numpy(), b.estimator_state.numpy())
    with pytest.raises(ValueError, match="splits the 2 optimizees of a meta step equally over the family's 2 members in "
                                         "antithetic pairs: pass --optimizees as a multiple of 4"):
        MetaTrainer(_family_config(every_member=True, optimizees=2, estimator="pes"), str(tmp_path / "x"), task=family)
