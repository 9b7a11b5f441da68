"""M-L2O: MAML meta-gradients against finite differences, and test-time adaptation."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules, tasks
from l2o_tf.meta import UnrollConfig
from l2o_tf.meta import adaptation
from numerics import directional_fd_check


def _setup():
    task = tasks.lasso(dim=3, sigma=0.5, init_stddev=0.5)
    rule = rules.RNNprop(hidden_size=3, num_layers=1, output_scale=0.1, seed=4)
    inner = (adaptation.fresh_optimizee(rule, task, 1), 1)
    outer = (adaptation.fresh_optimizee(rule, task, 2), 2)
    return task, rule, inner, outer, UnrollConfig(3)


def test_second_order_maml_gradient_matches_finite_differences():
    task, rule, inner, outer, config = _setup()
    maml = adaptation.MAMLConfig(inner_steps=1, inner_lr=0.5, second_order=True)

    def outer_loss(weights):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            inner_loss = adaptation.unroll_meta_loss(rule, weights, task, *inner, config)
        grads_inner = tape.gradient(inner_loss, weights)
        adapted = [w - maml.inner_lr * g for w, g in zip(weights, grads_inner)]
        return adaptation.unroll_meta_loss(rule, adapted, task, *outer, config)

    weights = [w.value for w in rule.trainable_weights]
    # The whole inner-then-outer function's tape gradient matches finite differences...
    directional_fd_check(outer_loss, weights, eps=1e-2, rtol=3e-2, atol=1e-4)
    # ...and the library's second-order MAML gradient is that gradient.
    loss, grads = adaptation.maml_meta_gradient(rule, task, inner, outer, config, maml)
    with tf.GradientTape() as tape:
        tape.watch(weights)
        reference = outer_loss(weights)
    assert float(loss) == pytest.approx(float(reference), rel=1e-5)
    for a, b in zip(grads, tape.gradient(reference, weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)


def test_first_order_is_second_order_without_the_inner_jacobian():
    task, rule, inner, outer, config = _setup()
    _, first = adaptation.maml_meta_gradient(rule, task, inner, outer, config, adaptation.MAMLConfig(1, 0.5, False))
    _, second = adaptation.maml_meta_gradient(rule, task, inner, outer, config, adaptation.MAMLConfig(1, 0.5, True))
    # First-order = the outer loss's gradient taken at the adapted weights (dw'/dw = I).
    weights = [w.value for w in rule.trainable_weights]
    with tf.GradientTape() as tape:
        tape.watch(weights)
        inner_loss = adaptation.unroll_meta_loss(rule, weights, task, *inner, config)
    adapted = [w - 0.5 * g for w, g in zip(weights, tape.gradient(inner_loss, weights))]
    with tf.GradientTape() as tape:
        tape.watch(adapted)
        outer_loss = adaptation.unroll_meta_loss(rule, adapted, task, *outer, config)
    expected = tape.gradient(outer_loss, adapted)
    for a, b in zip(first, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)
    assert any(not np.allclose(a.numpy(), b.numpy(), rtol=1e-3) for a, b in zip(first, second))


def test_adam_inner_loop_is_the_test_time_adaptation():
    """inner_optimizer="adam" takes the step adapt() takes (keras Adam from fresh moments): first-order MAML's
    gradient is the outer loss's gradient at the weights that adapt() returns on the same unroll."""
    task, rule, _, outer, _ = _setup()
    config = UnrollConfig(3)
    inner = (adaptation.fresh_optimizee(rule, task, 0), 0)  # adapt()'s first unroll: optimizee seed 0
    inner_steps = 1  # adapt() moves on to seed 1 for its second step; the inner loop stays on its task
    maml = adaptation.MAMLConfig(inner_steps, 0.05, second_order=False, inner_optimizer="adam")
    _, grads = adaptation.maml_meta_gradient(rule, task, inner, outer, config, maml)
    adapted = adaptation.adapt(rule, task, steps=inner_steps, learning_rate=0.05, unroll_length=3, seed=0)
    weights = [w.value for w in adapted.trainable_weights]
    assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip(weights, rule.trainable_weights)) > 0.04
    with tf.GradientTape() as tape:
        tape.watch(weights)
        outer_loss = adaptation.unroll_meta_loss(rule, weights, task, *outer, config)
    for a, b in zip(grads, tape.gradient(outer_loss, weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="inner_optimizer must be one of"):
        adaptation.MAMLConfig(1, 0.05, inner_optimizer="rmsprop")


def test_adapt_lowers_the_adaptation_loss_and_leaves_the_original_alone():
    task = tasks.lasso(dim=5, sigma=10.0)
    optimizer = l2o_tf.LearnedOptimizer(rules.RNNprop(hidden_size=8, output_scale=0.1, seed=0))
    before = [w.numpy().copy() for w in optimizer.rule.weights]
    config = UnrollConfig(10)

    def loss_on(rule, seeds=range(100, 104)):
        weights = [w.value for w in rule.trainable_weights]
        return np.mean([float(adaptation.unroll_meta_loss(rule, weights, task, adaptation.fresh_optimizee(rule, task, s), s, config)) for s in seeds])

    adapted = adaptation.adapt(optimizer, task, steps=15, learning_rate=3e-3, unroll_length=10, seed=0)
    assert isinstance(adapted, l2o_tf.LearnedOptimizer)
    assert loss_on(adapted.rule) < loss_on(optimizer.rule)
    for a, b in zip(before, optimizer.rule.weights):
        np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(ValueError, match="no weights to adapt"):
        adaptation.adapt(l2o_tf.LearnedOptimizer(rules.Adam()), task)


@pytest.mark.parametrize("second_order", [False, True])
def test_maml_meta_training_over_a_lasso_family(tmp_path, second_order):
    from l2o_tf.meta import MetaTrainConfig, MetaTrainer  # noqa: PLC0415

    config = MetaTrainConfig.from_flat(
        task="lasso", task_kwargs={"dim": 4}, task_family=(0.1, 0.5, 1.0), rule="rnnprop",
        rule_kwargs={"hidden_size": 6, "output_scale": 0.1}, unroll=4, curriculum=(8,), meta_steps=24,
        meta_lr=1e-2, validate_every=1000, checkpoint_every=1000, maml_inner_steps=1, maml_inner_lr=1e-2,
        maml_second_order=second_order,
    )
    trainer = MetaTrainer(config, str(tmp_path))
    assert [t.sigma for t in trainer.tasks] == [0.1, 0.5, 1.0]
    before = trainer.validate()
    trainer.train(verbose=0)
    assert trainer.validate() < before
    assert int(trainer.trajectory_index) == 12  # two truncations per trajectory
    assert [trainer._step_function(m, False).experimental_get_tracing_count() for m in range(3)] == [1, 1, 1]


def test_adapt_on_fit_adapts_the_rule_only():
    gen = np.random.default_rng(0)
    x = gen.normal(size=(256, 6)).astype("float32")
    y = (x @ gen.normal(size=(6, 1))).astype("float32")
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    optimizer = l2o_tf.LearnedOptimizer(rules.RNNprop(hidden_size=6, output_scale=0.1, seed=2))
    model.compile(optimizer=optimizer, loss="mse")
    rule_before = [w.numpy().copy() for w in optimizer.rule.weights]
    model_before = [w.numpy().copy() for w in model.weights]
    callback = l2o_tf.AdaptOnFit(x, y, steps=3, every=2, unroll=5, learning_rate=1e-2, batch_size=32,
                                 keep_if_better=False, scales=(1.0,))

    class ModelUntouchedByAdaptation(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for a, b in zip(model_before, model.weights):
                np.testing.assert_array_equal(a, b.numpy())

    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[callback, ModelUntouchedByAdaptation()])
    assert callback.adaptations == 2  # start of fit, epoch 2
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(rule_before, optimizer.rule.weights))
    with pytest.raises(ValueError, match="steps >= 0"):
        l2o_tf.AdaptOnFit(x, y, steps=-1)
    with pytest.raises(ValueError, match="nothing to adapt"):
        l2o_tf.AdaptOnFit(x, y, steps=0, scales=(1.0,))
    with pytest.raises(ValueError, match="keep_if_better=False needs scales=\\(1.0,\\)"):
        l2o_tf.AdaptOnFit(x, y, keep_if_better=False)


def test_adapt_on_fit_keeps_the_rule_when_adaptation_does_worse_on_held_out_unrolls():
    """A wild adaptation (learning rate 3) of the shipped RNNprop ruins it; the guard measures that on
    held-out unrolls and keeps the rule as it was, while an ordinary one (1e-2) that helps is kept."""
    import keras  # noqa: PLC0415

    gen = np.random.default_rng(0)
    x = gen.normal(size=(256, 6)).astype("float32")
    y = (x @ gen.normal(size=(6, 1))).astype("float32")
    decisions = {}
    for lr, margin in ((3.0, 0.01), (1e-2, 0.01), (1e-2, 0.9)):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        optimizer = l2o_tf.pretrained.load("rnnprop-mnist")
        model.compile(optimizer=optimizer, loss="mse")
        before = [w.numpy().copy() for w in optimizer.rule.weights]
        callback = l2o_tf.AdaptOnFit(x, y, steps=3, unroll=5, learning_rate=lr, batch_size=32, margin=margin,
                                     scales=(1.0,))
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
        changed = any(not np.array_equal(a, b.numpy()) for a, b in zip(before, optimizer.rule.weights))
        decisions[lr, margin] = (callback.kept, changed)
    assert decisions[3.0, 0.01] == ([False], False)
    assert decisions[1e-2, 0.01] == ([True], True)
    assert decisions[1e-2, 0.9] == ([False], False)  # helps, but not by 90% over the checks
    assert l2o_tf.AdaptOnFit.settings(steps=2)["check_steps"] is None  # defaults: the fit's length
    with pytest.raises(ValueError, match="margin < 1"):
        l2o_tf.AdaptOnFit(x, y, margin=1.0)


def _regression(seed=0):
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(512, 6)).astype("float32")
    return x, (x @ gen.normal(size=(6, 1))).astype("float32")


def _fit_with_sgd_rule(rate, callbacks=(), epochs=2):
    """Linear regression trained by the SGD rule at ``rate`` (8 steps an epoch): the final training loss."""
    import keras  # noqa: PLC0415

    x, y = _regression()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    optimizer = l2o_tf.LearnedOptimizer(rules.SGD(learning_rate=rate))
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=False, callbacks=list(callbacks))
    return history.history["loss"][-1], optimizer


@pytest.mark.parametrize("rate, chosen", [(2e-3, 2.0), (0.9, 0.5), (0.45, 1.0)])
def test_adapt_on_fit_chooses_the_step_size_that_ends_lowest_over_the_fits_length(rate, chosen):
    """Steps too small (2e-3 on a linear regression) get the larger scale, steps that oscillate (0.9) the
    smaller, and a good rate (0.45) stays; the held-out trajectories are as long as the fit (2 x 8 steps); a
    chosen scale ends the fit lower than none."""
    callback = l2o_tf.AdaptOnFit(*_regression(1), steps=0, batch_size=64, scales=(0.5, 1.0, 2.0))
    adapted_loss, optimizer = _fit_with_sgd_rule(rate, [callback])
    plain_loss, _ = _fit_with_sgd_rule(rate)
    (decision,) = callback.decisions
    assert decision["check_steps"] == 16 and decision["scale"] == chosen
    assert float(optimizer.learning_rate) == pytest.approx(chosen)
    assert callback.kept == [chosen != 1.0]
    assert set(decision["scores"]) == {"as is", "lr x 0.5", "lr x 2"}
    if chosen != 1.0:
        assert adapted_loss < plain_loss


def test_adapt_on_fit_checks_until_the_next_adaptation_capped_by_check_steps():
    callback = l2o_tf.AdaptOnFit(*_regression(1), steps=0, batch_size=64, every=2, check_steps=12)
    _fit_with_sgd_rule(2e-3, [callback], epochs=5)
    assert [d["epoch"] for d in callback.decisions] == [0, 2, 4]
    assert [d["check_steps"] for d in callback.decisions] == [12, 12, 8]  # 2 epochs capped at 12; 1 epoch left


@pytest.mark.skipif(not any(shutil.which(name) for name in ("c++", "g++", "clang++")),
                    reason="no C++ compiler on this machine to build the native kernel")
@pytest.mark.parametrize("name", ["general", "rnnprop-mnist"])
def test_the_guards_trajectories_run_the_native_step_as_fit_does_and_score_as_the_tf_step(name):
    """The held-out trajectories run the rule step fit runs (the native kernel); with candidate weights other
    than the rule's own and a step scale, their scores equal the TF step's to float rounding."""
    import keras  # noqa: PLC0415

    from l2o_tf.tasks.keras_model import KerasModelTask  # noqa: PLC0415

    x, y = _regression(2)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    model.compile(loss="mse")
    rule = l2o_tf.pretrained.load_rule(name)
    other = adaptation.copy_rule(rule)
    for weight in other.trainable_weights:
        weight.assign(weight * 1.2)
    task = KerasModelTask("check", lambda seed: model, ((x, y), (x[:1], y[:1])), model.loss, batch_size=32)
    guard = l2o_tf.AdaptOnFit(x, y, steps=0, check_unrolls=2)
    candidates = [(rule, 1.0), (other, 0.7)]
    tf_scores = guard._held_out_scores(rule, candidates, task, 11, 40, native_kernel=False)
    native_scores = guard._held_out_scores(rule, candidates, task, 11, 40, native_kernel=True)
    assert not np.allclose(tf_scores[0], tf_scores[1], rtol=1e-3)  # the candidates differ
    np.testing.assert_allclose(native_scores, tf_scores, rtol=1e-5)


def test_adapt_on_fit_unrolls_the_model_as_fit_trains_it_batchnorm_on_batch_statistics():
    """The guard's trajectories must score the model fit trains: with BatchNorm, the loss on each batch's own
    statistics (training=True), not on the untouched moving statistics (identity at initialisation)."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.normal(size=(64, 5))).astype("float32")  # far from the moving statistics' 0 mean, 1 var
    y = rng.integers(0, 3, size=64).astype("int32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.Activation("relu"), keras.layers.Dense(3)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=l2o_tf.pretrained.load("general"), loss=loss)
    callback = l2o_tf.AdaptOnFit(x, y, batch_size=16)
    callback.set_model(model)
    task = callback.task()
    batch = task.train_batch(0, 0)
    params = [v.value for v in model.trainable_variables]
    as_fit = float(loss(batch[1], model(batch[0], training=True)))
    np.testing.assert_allclose(float(task.loss(params, batch)), as_fit, rtol=1e-5)
    assert abs(float(loss(batch[1], model(batch[0], training=False))) - as_fit) > 1e-2  # the two differ here


def test_adapt_on_fit_scales_refuse_a_learning_rate_schedule():
    import keras  # noqa: PLC0415

    x, y = _regression()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    model.compile(optimizer=l2o_tf.LearnedOptimizer(rules.SGD(learning_rate=1.0), learning_rate=schedule), loss="mse")
    with pytest.raises(ValueError, match="scales multiply a constant learning rate.*pass scales=\\(1.0,\\)"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[l2o_tf.AdaptOnFit(x, y, steps=0)])
