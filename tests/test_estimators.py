"""Meta-gradient estimators: PES and ES against a closed-form full-horizon meta-gradient, truncated
backprop's short-horizon bias, relative meta-losses, and exact resume under every estimator."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import seeds
from l2o_tf.meta import MetaTrainConfig, MetaTrainer, UnrollConfig, estimators
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.rules.base import UpdateRule
from l2o_tf.tasks.base import Task

CURVATURES = np.array([1.0, 0.5, 0.2], "float32")
START = np.array([1.0, -2.0, 3.0], "float32")


class ExpStep(UpdateRule):
    """Gradient descent with learning rate ``exp(w)``: one meta-trainable weight."""

    CONFIG_FIELDS = ("log_lr",)
    NOMINAL_STEP_FIELD = "log_lr"

    def __init__(self, log_lr=float(np.log(0.3)), **kwargs):
        self.log_lr = float(log_lr)
        super().__init__(**kwargs)

    @property
    def state_size(self):
        return 0

    def create_weights(self):
        self.w = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.log_lr), name="log_lr")

    def call(self, grads, params, state, step):
        return -tf.exp(self.w) * grads, state


class _Quadratic(Task):
    """``f(x) = 1/2 sum_i lambda_i x_i^2`` from a fixed start: the trajectory under ``_ExpStep`` is closed-form."""

    name = "closed_form_quadratic"

    def init_params(self, seed):
        return [tf.constant(START)]

    def train_batch(self, seed, step=0):
        return ()

    def loss(self, params, batch):
        return 0.5 * tf.reduce_sum(CURVATURES * tf.square(params[0]))


def _full_horizon_gradient(log_lr, horizon, unroll, start=0):
    """d/dw of the sum over a trajectory's truncations of their meta-losses, ``(1/K) sum_{t=start+1..T} f_t``."""
    lr = np.exp(log_lr)
    t = np.arange(start + 1, horizon + 1)[:, None]
    decay = 1 - lr * CURVATURES
    # f_t = 1/2 sum lambda x0^2 decay^(2t);  d decay / dw = -lr * lambda.
    df = 0.5 * CURVATURES * START**2 * 2 * t * decay ** (2 * t - 1) * (-lr * CURVATURES)
    return float(df.sum() / unroll)


def _truncations(estimator, problem, particles, truncations, unroll, scored_from=0):
    """Per particle, the meta-gradient summed over ``truncations`` consecutive truncations of its trajectory
    (those before truncation ``scored_from`` unscored, as ``meta_loss_trajectory_start`` leaves them)."""

    def compiled(problem):
        def one(params, state, index, noise_seed, start_step):
            truncation = estimators.Truncation([params], tf.zeros([3, 0]), tf.zeros([0]), state, tf.constant(1.0),
                                               tf.constant(0, tf.int64), start_step)
            _, grads, result, new_state = estimator.gradient(problem, truncation, index, noise_seed)
            return grads[0], result.params[0], new_state

        @tf.function
        def all_particles(params, states, noise_seed, start_step):
            return tf.map_fn(lambda args: one(args[0], args[1], args[2], noise_seed, start_step),
                             (params, states, tf.range(particles, dtype=tf.int64)),
                             fn_output_signature=(tf.float32, tf.float32, tf.float32))

        return all_particles

    steps = {False: compiled(dataclasses.replace(problem, scored=False)), True: compiled(problem)}
    params = tf.tile(START[None], [particles, 1])
    states = tf.zeros([particles, estimator.state_size()])
    total = tf.zeros([particles])
    for j in range(truncations):
        grads, params, states = steps[j >= scored_from](params, states, tf.constant(100 + j, tf.int64),
                                                        tf.constant(j * unroll, tf.int64))
        total += grads
    return total.numpy()


def _pair_means(per_particle):
    """Mean and standard error over antithetic pairs (the pair is the independent unit)."""
    pairs = per_particle.reshape(-1, 2).mean(axis=1)
    return pairs.mean(), pairs.std(ddof=1) / np.sqrt(len(pairs))


def test_pes_is_unbiased_over_the_whole_trajectory_and_truncated_backprop_is_not():
    unroll, truncations = 4, 5
    rule = ExpStep()
    problem = estimators.Problem(_Quadratic(), UnrollConfig(unroll))
    truth = _full_horizon_gradient(rule.log_lr, unroll * truncations, unroll)

    pes, standard_error = _pair_means(_truncations(estimators.PES(rule, 0.01), problem, 4000, truncations, unroll))
    assert standard_error < 0.05 * abs(truth), (standard_error, truth)  # the test can tell
    assert abs(pes - truth) < 4 * standard_error, (pes, truth, standard_error)

    # Backprop with second derivatives (the first-order default drops d grad / d params: another bias).
    exact = estimators.Problem(_Quadratic(), UnrollConfig(unroll, second_order=True))
    truncated = _truncations(estimators.Truncated(rule), exact, 2, truncations, unroll)[0]
    assert abs(truncated - truth) > 10 * standard_error, (truncated, truth, standard_error)
    # Truncated ES is biased the same way: it ignores how earlier truncations' weights shaped this one's start.
    es, es_error = _pair_means(_truncations(estimators.ES(rule, 0.01), problem, 4000, truncations, unroll))
    assert abs(es - truncated) < 4 * es_error and abs(es - truth) > 10 * es_error, (es, truncated, truth)


def test_pes_scored_at_the_end_credits_early_perturbations_and_truncated_backprop_cannot():
    """meta_loss_trajectory_start: the last two of five truncations scored.  PES's sum is the gradient of the
    trajectory's end loss, which early steps shape; truncated backprop sees only the scored truncations' own steps."""
    unroll, truncations, scored_from = 4, 5, 3
    rule = ExpStep()
    problem = estimators.Problem(_Quadratic(), UnrollConfig(unroll))
    truth = _full_horizon_gradient(rule.log_lr, unroll * truncations, unroll, start=unroll * scored_from)
    pes, standard_error = _pair_means(
        _truncations(estimators.PES(rule, 0.01), problem, 4000, truncations, unroll, scored_from))
    assert standard_error < 0.05 * abs(truth), (standard_error, truth)
    assert abs(pes - truth) < 4 * standard_error, (pes, truth, standard_error)
    exact = estimators.Problem(_Quadratic(), UnrollConfig(unroll, second_order=True))
    truncated = _truncations(estimators.Truncated(rule), exact, 2, truncations, unroll, scored_from)[0]
    assert abs(truncated - truth) > 10 * standard_error, (truncated, truth, standard_error)
    # Unscored truncations add no gradient: scoring from the end of the trajectory leaves no gradient at all.
    assert np.all(_truncations(estimators.PES(rule, 0.01), problem, 4, truncations, unroll, truncations) == 0)


def test_es_over_a_full_unroll_matches_the_gradient_in_expectation():
    horizon = 12
    rule = ExpStep()
    problem = estimators.Problem(_Quadratic(), UnrollConfig(horizon))
    truth = _full_horizon_gradient(rule.log_lr, horizon, horizon)
    es, standard_error = _pair_means(_truncations(estimators.ES(rule, 0.01), problem, 4000, 1, horizon))
    assert standard_error < 0.05 * abs(truth)
    assert abs(es - truth) < 4 * standard_error, (es, truth, standard_error)
    # ... and backprop through the one truncation (with second derivatives) is the same quantity, exactly.
    exact = estimators.Problem(_Quadratic(), UnrollConfig(horizon, second_order=True))
    backprop = _truncations(estimators.Truncated(rule), exact, 2, 1, horizon)[0]
    np.testing.assert_allclose(backprop, truth, rtol=1e-4)


def test_antithetic_pairs_share_their_optimizee_and_negate_their_perturbation():
    es = estimators.ES(ExpStep(), 0.1)
    seed = tf.constant(7, tf.int64)
    e0, e1, e2 = (es.perturbation(i, seed) for i in range(3))
    np.testing.assert_array_equal(e0.numpy(), -e1.numpy())
    assert float(tf.abs(e0 - e2)[0]) > 0
    assert float(tf.abs(es.perturbation(0, tf.constant(8, tf.int64)) - e0)[0]) > 0  # fresh every meta step


def test_relative_loss_divides_by_the_initial_loss():
    task, rule = _Quadratic(), ExpStep()
    config, relative = UnrollConfig(3), UnrollConfig(3, relative_loss=True)
    start = dict(params=task.init_params(0), state=tf.zeros([3, 0]), seed=0, start_step=0)
    plain = unroll_lib.unroll(task, rule, config=config, **start)
    scaled = unroll_lib.unroll(task, rule, config=relative, loss_scale=tf.constant(4.0), **start)
    np.testing.assert_allclose(float(scaled.meta_loss), float(plain.meta_loss) / 4.0, rtol=1e-6)
    with pytest.raises(ValueError, match="relative_loss needs the optimizee's initial loss"):
        unroll_lib.unroll(task, rule, config=relative, **start)


def _config(estimator, **overrides):
    options = dict(task="quadratic", task_kwargs={"batch_size": 4, "dim": 3}, rule="rnnprop",
                   rule_kwargs={"hidden_size": 4, "output_scale": 0.1}, unroll=3, curriculum=(9,), meta_steps=8,
                   meta_lr=1e-2, validate_every=4, validation_seeds=1, checkpoint_every=1000, optimizees=2,
                   estimator=estimator)
    options.update(overrides)
    return MetaTrainConfig.from_flat(**options)


@pytest.mark.parametrize("estimator", ["truncated", "pes", "es", "maml"])
def test_a_stopped_run_resumes_exactly_under_every_estimator(tmp_path, estimator):
    """Stop after 4 meta steps (mid-trajectory: PES carries particle state), resume in a new trainer, end equal."""
    overrides = dict(relative_loss=True) if estimator == "pes" else {}
    reference = MetaTrainer(_config(estimator, **overrides), str(tmp_path / "reference"))
    reference.train(verbose=0)
    stopped = MetaTrainer(_config(estimator, meta_steps=4, checkpoint_every=4, **overrides), str(tmp_path / "run"))
    stopped.train(verbose=0)
    if estimator == "pes":
        assert float(tf.reduce_max(tf.abs(stopped.estimator_state))) > 0  # a particle state to lose
        assert float(tf.reduce_min(stopped.loss_scale)) != 1.0
    resumed = MetaTrainer(_config(estimator, **overrides), str(tmp_path / "run"))
    resumed.train(verbose=0)
    for a, b in zip(reference.rule.weights, resumed.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(reference.estimator_state.numpy(), resumed.estimator_state.numpy())
    assert any(float(tf.reduce_max(tf.abs(a - b))) > 0
               for a, b in zip(reference.rule.weights, MetaTrainer(_config(estimator), str(tmp_path / "x")).rule.weights))


def test_estimator_options_are_checked():
    with pytest.raises(ValueError, match="optimizees must be even"):
        _config("pes", optimizees=3)
    with pytest.raises(ValueError, match="es_sigma must be > 0"):
        _config("es", es_sigma=0.0)
    with pytest.raises(ValueError, match="maml_inner_steps is the maml estimator's option"):
        _config("pes", maml_inner_steps=2)
    assert _config("truncated", maml_inner_steps=2, optimizees=1).estimation.estimator == "maml"  # the older spelling
    assert _config("maml").maml.maml_inner_steps == 1


@pytest.mark.parametrize("estimator", ["truncated", "pes"])
def test_meta_loss_trajectory_start_updates_the_rule_only_from_the_trajectory_end(tmp_path, monkeypatch, estimator):
    """Unroll 3, trajectories of 9, scored from step 6: only every third meta step updates the rule (and
    advances Adam); the others carry the optimizees on, PES's particles accumulating their perturbations."""
    config = _config(estimator, meta_loss_trajectory_start=6, meta_steps=6, validate_every=1000)
    trainer = MetaTrainer(config, str(tmp_path))
    initial = [w.numpy() for w in trainer.rule.weights]
    seen, compiled = [], trainer._step_function
    monkeypatch.setattr(trainer, "_step_function",
                        lambda member, penalized, scored: seen.append(scored) or compiled(member, penalized, scored))
    moved = []
    original_assign_add = trainer.meta_step.assign_add

    def after_step(value):
        moved.append(any(float(np.abs(w.numpy() - i).max()) > 0 for w, i in zip(trainer.rule.weights, initial)))
        return original_assign_add(value)

    monkeypatch.setattr(trainer.meta_step, "assign_add", after_step)
    trainer.train(verbose=0)
    assert seen == [False, False, True, False, False, True]
    assert moved == [False, False, True, True, True, True]
    assert int(trainer.meta_optimizer.iterations) == 2
    # Validation scores the trajectory from step 6 on, as the meta-loss does.
    seed = seeds.VALIDATION
    _, _, losses = trainer._run(trainer.task, trainer.task.init_params(seed), trainer.rule.initial_state(
        trainer.num_coordinates(0)), tf.constant(seed, tf.int64), tf.constant(9))
    assert trainer.validate() == pytest.approx(float(tf.reduce_mean(losses[6:])), rel=1e-6)


def test_meta_loss_trajectory_start_is_checked():
    with pytest.raises(ValueError, match=r"meta_loss_trajectory_start \(4\) must be a multiple of the unroll \(3\)"):
        _config("pes", meta_loss_trajectory_start=4)
    with pytest.raises(ValueError, match=r"meta_loss_trajectory_start \(9\) must be below the shortest trajectory"):
        _config("pes", meta_loss_trajectory_start=9)
    with pytest.raises(ValueError, match="MAML .* does not combine with meta_loss_trajectory_start"):
        _config("maml", meta_loss_trajectory_start=3, optimizees=1)
