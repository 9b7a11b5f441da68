"""Flatness penalties against closed forms on quadratics, and their meta-gradients against FD."""

import numpy as np
import pytest
import tensorflow as tf

from l2o_tf import rules, tasks
from l2o_tf.meta import UnrollConfig, regularizers
from l2o_tf.meta import unroll as unroll_lib
from numerics import directional_fd_check


def _quadratic(a):
    a = tf.constant(a, tf.float32)
    return lambda params: 0.5 * tf.reduce_sum(params[0] * tf.linalg.matvec(a, params[0]))


def _spd(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    return (q * np.asarray(eigenvalues)) @ q.T


def test_hessian_vector_product_is_a_times_v():
    a = _spd([3.0, 1.0, 0.5])
    v = tf.constant([1.0, -2.0, 0.5])
    hv = regularizers.hessian_vector_product(_quadratic(a), [tf.ones([3])], [v])
    np.testing.assert_allclose(hv[0].numpy(), a @ v.numpy(), rtol=1e-5)


def test_trace_is_exact_for_a_diagonal_hessian():
    diag = np.array([4.0, 0.5, 2.0, 1.5], "float32")
    trace = regularizers.hessian_trace(_quadratic(np.diag(diag)), [tf.ones([4])], num_probes=1, seed=3)
    assert float(trace) == pytest.approx(diag.sum(), rel=1e-6)


def test_trace_is_unbiased_within_monte_carlo_tolerance():
    """Hutchinson's variance with Rademacher probes is 2 * sum_{i != j} A_ij^2; allow 4 standard errors."""
    a = _spd([3.0, 2.0, 1.0, 0.5, 0.25])
    probes = 400
    estimate = float(regularizers.hessian_trace(_quadratic(a), [tf.zeros([5])], num_probes=probes, seed=1))
    std_error = np.sqrt(2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)) / probes)
    assert abs(estimate - np.trace(a)) <= 4 * std_error


def test_top_eigenvalue_by_power_iteration():
    a = _spd([5.0, 2.0, 1.0, 0.3])
    value = regularizers.hessian_top_eigenvalue(_quadratic(a), [tf.ones([4])], num_iters=60, seed=2)
    assert float(value) == pytest.approx(5.0, rel=1e-4)


def test_local_entropy_gradient_matches_closed_form():
    """For f = 1/2 w^T A w: grad(-F)(w) = gamma A (A + gamma I)^-1 w."""
    a, gamma = _spd([2.0, 1.0, 0.5]), 1.5
    w = tf.constant([1.0, -0.5, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(w)
        penalty = regularizers.local_entropy(_quadratic(a), [w], gamma=gamma, num_steps=400, step_size=0.05, temperature=0.0, seed=0)
    expected = gamma * a @ np.linalg.solve(a + gamma * np.eye(3), w.numpy())
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_local_entropy_mean_with_thermal_noise():
    """With noise, E[w'] is still the Gaussian mean: the estimate stays within ~4 standard errors.

    Stationary std sqrt(T / (a + gamma)) <= 0.07, correlation time ~1 / (step (a + gamma)) = 5 steps,
    500 averaged steps: standard error ~0.007.
    """
    a, gamma = np.diag([1.0, 2.0]).astype("float32"), 1.0
    w = tf.constant([1.0, 1.0])
    with tf.GradientTape() as tape:
        tape.watch(w)
        penalty = regularizers.local_entropy(_quadratic(a), [w], gamma=gamma, num_steps=1000, step_size=0.1, temperature=0.01, seed=4)
    expected = gamma * a @ np.linalg.solve(a + gamma * np.eye(2), w.numpy())
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy(), expected, atol=0.03)


def test_adaptive_trace_is_exact_for_a_diagonal_hessian():
    """tr(T H T) / f with T = |w| + eta: on f = 1/2 sum a_i w_i^2 + c every probe gives the closed form."""
    a, c, eta = np.array([3.0, 1.0, 0.25, 2.0]), 0.5, 0.01
    w = np.array([1.0, -2.0, 0.5, 0.0])
    loss_fn = lambda p: 0.5 * tf.reduce_sum(tf.constant(a, tf.float32) * p[0] ** 2) + c  # noqa: E731
    value = regularizers.adaptive_trace(loss_fn, [tf.constant(w, tf.float32)], num_probes=1, eta=eta, seed=3)
    f = 0.5 * np.sum(a * w**2) + c
    assert float(value) == pytest.approx(np.sum(a * (np.abs(w) + eta) ** 2) / (f + 1e-4), rel=1e-5)


def test_adaptive_trace_estimates_the_weighted_diagonal_of_a_full_hessian():
    """E[(Tv)^T A (Tv)] = sum_i A_ii (|w_i| + eta)^2 for Rademacher v, whatever A's off-diagonal."""
    a = _spd([4.0, 2.0, 1.0, 0.5, 0.25], seed=3)
    w = np.array([1.0, -0.5, 2.0, 0.3, -1.0])
    exact = np.sum(np.diag(a) * (np.abs(w) + 0.01) ** 2) / (0.5 * w @ a @ w + 1e-4)
    estimate = float(regularizers.adaptive_trace(_quadratic(a), [tf.constant(w, tf.float32)], num_probes=400, seed=1))
    assert estimate == pytest.approx(exact, rel=0.1)


def _two_layer(x, y):
    """Softmax cross-entropy of a bias-free ReLU network W2 relu(W1 x) on fixed data."""
    def loss_fn(params):
        logits = tf.matmul(tf.nn.relu(tf.matmul(x, params[0])), params[1])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return loss_fn


def test_adaptive_trace_is_invariant_to_relu_rescaling_where_the_trace_is_not():
    """W1 -> a W1, W2 -> W2 / a leaves the network's function, hence its loss, unchanged (Dinh et al. 2017)."""
    gen = np.random.default_rng(0)
    x = tf.constant(gen.normal(size=(16, 3)), tf.float32)
    y = tf.constant(gen.integers(0, 2, 16), tf.int32)
    w1, w2 = gen.normal(size=(3, 4)).astype("float32"), gen.normal(size=(4, 2)).astype("float32")
    loss_fn = _two_layer(x, y)

    def measures(scale):
        params = [tf.constant(w1 * scale), tf.constant(w2 / scale)]
        return (float(regularizers.adaptive_trace(loss_fn, params, num_probes=3, eta=0.0, seed=2)),
                float(regularizers.hessian_trace(loss_fn, params, num_probes=3, seed=2)))

    (adaptive, trace), (adaptive_scaled, trace_scaled) = measures(1.0), measures(4.0)
    assert adaptive_scaled == pytest.approx(adaptive, rel=1e-4)
    assert abs(trace_scaled - trace) > 0.3 * trace


def test_saturating_the_logits_lowers_the_trace_but_not_the_adaptive_trace():
    """Logistic regression on separable data: scaling the weights by a shrinks H like exp(-a margin), which is how
    learned optimizers met the Hessian penalty; the adaptive trace grows instead."""
    x = tf.constant([[1.0, 0.5], [0.8, -0.3], [-1.0, 0.2], [-0.6, -0.9]])
    y = tf.constant([0, 0, 1, 1])
    loss_fn = lambda p: tf.reduce_mean(  # noqa: E731
        tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.matmul(x, p[0])))
    w = np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)
    traces, adaptive = [], []
    for scale in (1.0, 3.0, 6.0):
        params = [tf.constant(w * scale)]
        traces.append(float(regularizers.hessian_trace(loss_fn, params, num_probes=4, seed=0)))
        adaptive.append(float(regularizers.adaptive_trace(loss_fn, params, num_probes=4, seed=0)))
    assert traces[2] < traces[0] / 10
    assert adaptive[0] < adaptive[1] < adaptive[2]


@pytest.mark.parametrize("name", ["hessian_trace", "hessian_eig", "adaptive_trace"])
def test_penalty_meta_gradient_through_an_unroll_matches_finite_differences(name):
    """d penalty(params_K(rule weights)) / d rule weights, through a 3-step unroll, against FD."""
    task = tasks.Rosenbrock(batch_size=2, dim=2, sigma=0.3)
    rule = rules.RNNprop(hidden_size=3, num_layers=1, output_scale=0.05, seed=1)
    params0, batch = task.init_params(0), ()
    penalty = regularizers.get(name)

    def objective(weights):
        class Bound:
            def __call__(self, *args):
                return rule.stateless_call(weights, [], *args)[0]

        params = unroll_lib.unroll(task, Bound(), params0, rule.initial_state(4), 0, 0, UnrollConfig(3)).params
        kwargs = {"num_iters": 10} if name == "hessian_eig" else {"num_probes": 2}
        return penalty(lambda p: task.loss(p, batch), params, seed=5, **kwargs)

    directional_fd_check(objective, [w.value for w in rule.trainable_weights], eps=1e-2, rtol=5e-2, atol=1e-3)


@pytest.mark.parametrize("name", ["hessian_trace", "hessian_eig", "local_entropy", "adaptive_trace"])
def test_meta_training_with_a_penalty(name, tmp_path):
    """The trainer adds alpha * R to the meta-loss from --reg_start on, and still learns."""
    from l2o_tf.meta import MetaTrainConfig, MetaTrainer  # noqa: PLC0415

    config = MetaTrainConfig.from_flat(
        task="rosenbrock", task_kwargs={"batch_size": 4, "sigma": 0.5}, rule="rnnprop",
        rule_kwargs={"hidden_size": 4, "output_scale": 0.05}, unroll=4, curriculum=(8,), meta_steps=6,
        validate_every=1000, checkpoint_every=1000, regularizer=name, reg_weight=1e-3, reg_every=2, reg_start=3,
        reg_num_iters=3, reg_sgld_steps=4,
    )
    trainer = MetaTrainer(config, str(tmp_path))
    trainer.train(verbose=0)
    assert trainer._step_function(0, True).experimental_get_tracing_count() == 1
    assert trainer._step_function(0, False).experimental_get_tracing_count() == 1
    assert all(np.all(np.isfinite(w.numpy())) for w in trainer.rule.weights)


def test_trajectory_start_penalises_only_the_end_of_each_trajectory(tmp_path, monkeypatch):
    """With --reg_trajectory_start=4 (unroll 4, trajectories of 12) only the unrolls from optimizee step 4 on
    carry the penalty, in every trajectory, once --reg_start is reached."""
    from l2o_tf.meta import MetaTrainConfig, MetaTrainer  # noqa: PLC0415

    config = MetaTrainConfig.from_flat(
        task="rosenbrock", task_kwargs={"batch_size": 2, "sigma": 0.5}, rule="rnnprop",
        rule_kwargs={"hidden_size": 3, "output_scale": 0.05}, unroll=4, curriculum=(12,), meta_steps=9,
        validate_every=1000, checkpoint_every=1000, regularizer="hessian_trace", reg_start=4, reg_trajectory_start=4,
    )
    trainer = MetaTrainer(config, str(tmp_path))
    seen, compiled = [], trainer._step_function
    monkeypatch.setattr(trainer, "_step_function",
                        lambda member, penalized, scored: seen.append(penalized) or compiled(member, penalized, scored))
    trainer.train(verbose=0)
    assert seen == [False, False, False, False, True, True, False, True, True]
    with pytest.raises(ValueError, match="reg_trajectory_start .6. must be a multiple of the unroll .4."):
        MetaTrainConfig.from_flat(task="rosenbrock", unroll=4, curriculum=(12,), reg_trajectory_start=6)


def test_penalty_enters_the_meta_loss_with_its_weight():
    task = tasks.Rosenbrock(batch_size=2, dim=2, sigma=0.3)
    rule = rules.RNNprop(hidden_size=3, output_scale=0.05, seed=1)
    args = (task, rule, task.init_params(0), rule.initial_state(4), 0, 0, UnrollConfig(4))
    plain = unroll_lib.unroll(*args)
    penalty = regularizers.Penalty("hessian_trace", weight=0.01, every=2, options=(("num_probes", 1),))
    penalized = unroll_lib.unroll(*args, penalty=penalty)
    assert float(penalized.penalty) > 0
    assert float(penalized.meta_loss) == pytest.approx(float(plain.meta_loss) + 0.01 * float(penalized.penalty), rel=1e-5)


def test_evaluation_reports_sharpness():
    """On the quadratic the Hessian is 2/B * W^T W per problem block: check both measurements."""
    from l2o_tf.evaluate import evaluate_rule  # noqa: PLC0415

    task = tasks.quadratic(batch_size=2, dim=3)
    result = evaluate_rule(rules.Adam(learning_rate=0.1), task, 5, 1, measure_sharpness=True)
    w, _ = task.train_batch(2 * 10**9)
    blocks = [2.0 / 2 * w[b].numpy().T @ w[b].numpy() for b in range(2)]
    metrics = result["at_step"]["5"]
    assert metrics["hessian_top_eigenvalue"]["mean"] == pytest.approx(max(np.linalg.eigvalsh(h).max() for h in blocks), rel=1e-3)
    trace = sum(np.trace(h) for h in blocks)
    assert abs(metrics["hessian_trace"]["mean"] - trace) < 0.5 * trace  # 10 probes: a Monte-Carlo estimate


def test_unknown_regularizer_and_bad_arguments():
    with pytest.raises(ValueError, match="Unknown regularizer 'flat'.*hessian_trace"):
        regularizers.get("flat")
    with pytest.raises(ValueError, match="num_probes >= 1"):
        regularizers.hessian_trace(_quadratic(np.eye(2)), [tf.ones([2])], num_probes=0)
    with pytest.raises(ValueError, match="gamma > 0"):
        regularizers.local_entropy(_quadratic(np.eye(2)), [tf.ones([2])], gamma=0)
