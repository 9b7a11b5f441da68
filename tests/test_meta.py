"""Meta-training: meta-gradients against finite differences, learning on the quadratic, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules, seeds, tasks
from l2o_tf.evaluate import evaluate_rule
from l2o_tf.meta import MetaTrainConfig, MetaTrainer, UnrollConfig
from l2o_tf.meta import unroll as unroll_lib
from numerics import directional_fd_check, stateless_unroll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("rule_cls", [rules.RNNprop, rules.DMLSTM])
def test_meta_gradient_matches_finite_differences(rule_cls):
    """With second derivatives kept, the tape's meta-gradient is the exact derivative of the meta-loss."""
    task = tasks.quadratic(batch_size=2, dim=3, init_stddev=1.0)
    rule = rule_cls(hidden_size=3, num_layers=1, output_scale=0.1, seed=2)
    config = UnrollConfig(length=4, second_order=True)
    params, state = task.init_params(0), rule.initial_state(6)

    def meta_loss(weights):
        return stateless_unroll(rule, weights, task, params, state, config).meta_loss

    directional_fd_check(meta_loss, [w.value for w in rule.trainable_weights], eps=1e-2, rtol=3e-2, atol=1e-4)


def test_log_loss_meta_loss_weighs_log_losses_and_matches_finite_differences():
    """``log_loss``: the meta-loss is ``sum_t w_t log f_t`` of the same trajectory, and its tape gradient is exact."""
    task = tasks.lasso(dim=3, sigma=1.0, init_stddev=0.5)
    rule = rules.RNNprop(hidden_size=3, num_layers=1, output_scale=0.1, seed=4)
    params, state = task.init_params(0), rule.initial_state(3)
    weights = [w.value for w in rule.trainable_weights]
    config = UnrollConfig(length=4, second_order=True, log_loss=True)
    plain = stateless_unroll(rule, weights, task, params, state, UnrollConfig(4, second_order=True))
    logged = stateless_unroll(rule, weights, task, params, state, config)
    np.testing.assert_allclose(logged.losses.numpy(), plain.losses.numpy())
    np.testing.assert_allclose(float(logged.meta_loss), float(np.mean(np.log(plain.losses.numpy()))), rtol=1e-6)
    directional_fd_check(lambda w: stateless_unroll(rule, w, task, params, state, config).meta_loss,
                         weights, eps=1e-2, rtol=3e-2, atol=1e-4)


def test_first_order_drops_exactly_the_hessian_terms():
    """On a linear loss the optimizee gradient is constant, so both variants give the same meta-gradient."""

    class Linear(tasks.Task):
        def init_params(self, seed):
            return [tf.ones([5])]

        def train_batch(self, seed, step):
            return tf.constant([1.0, -2.0, 0.5, 3.0, -1.0])

        def loss(self, params, batch):
            return tf.reduce_sum(params[0] * batch)

    task, rule = Linear(), rules.RNNprop(hidden_size=4, seed=1)
    grads = {}
    for second_order in (False, True):
        with tf.GradientTape() as tape:
            loss, *_ = unroll_lib.unroll(task, rule, task.init_params(0), rule.initial_state(5), 0, 0, UnrollConfig(5, second_order))
        grads[second_order] = tape.gradient(loss, rule.trainable_weights)
    for a, b in zip(grads[False], grads[True]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-8)


def _quadratic_config(**overrides):
    config = dict(task="quadratic", task_kwargs={"batch_size": 8, "dim": 4}, rule="rnnprop",
                  rule_kwargs={"hidden_size": 8, "output_scale": 0.1}, unroll=5, curriculum=(25,),
                  meta_steps=60, meta_lr=1e-2, validate_every=1000, checkpoint_every=1000)
    config.update(overrides)
    return MetaTrainConfig.from_flat(**config)


def test_a_few_dozen_meta_steps_lower_the_meta_loss(tmp_path):
    trainer = MetaTrainer(_quadratic_config(), str(tmp_path))
    before = trainer.validate()
    trainer.train(verbose=0)
    after = trainer.validate()
    assert after < 0.7 * before, (before, after)
    assert l2o_tf.pretrained.load(str(tmp_path)).rule.get_config() == trainer.rule.get_config()


def test_imitation_pulls_the_rule_towards_its_adam_teacher(tmp_path):
    """With only the imitation term, meta-training makes the rule's updates approach Adam's."""
    config = _quadratic_config(imitation_weight=1e4, imitation_lr=0.01, meta_steps=80)
    trainer = MetaTrainer(config, str(tmp_path))
    task, teacher = trainer.task, rules.Adam(learning_rate=0.01)

    def distance():
        params = task.init_params(5)
        state, teacher_state = trainer.rule.initial_state(32), teacher.initial_state(32)
        total = 0.0
        for t in range(10):
            _, params, state, (imitation, teacher_state) = unroll_lib.optimizee_step(
                task, trainer.rule, params, state, task.train_batch(5, t), t, teacher=(teacher, teacher_state))
            total += float(imitation)
        return total

    before = distance()
    trainer.train(verbose=0)
    assert distance() < 0.5 * before


def test_curriculum_advances_when_validation_stalls(tmp_path):
    trainer = MetaTrainer(_quadratic_config(curriculum=(10, 20), patience=2), str(tmp_path))
    trainer._new_optimizee()
    for value in (5.0, 6.0, 7.0):
        trainer._after_validation(value)
    assert trainer.trajectory_length == 20 and float(trainer.best_validation) == np.inf


def test_the_rule_at_the_best_validation_is_exported_beside_the_latest(tmp_path):
    """``out_dir/best`` holds the rule of the validation that improved last (by more than 0.1% of its size, also for
    a log loss's negative values), with its meta step: the weights of that step's checkpoint, not the latest."""
    trainer = MetaTrainer(_quadratic_config(meta_steps=8, validate_every=2, checkpoint_every=2), str(tmp_path))
    scripted = iter([-1.0, -1.5, -1.5005, -1.2])  # steps 2, 4, 6, 8: 6 is within 0.1% of 4, so not better
    trainer.validate = lambda: next(scripted)
    trainer.train(verbose=0)
    with open(tmp_path / "best" / "training.json") as f:
        record = json.load(f)
    assert record["meta_step"] == 4 and record["validation"] == -1.5 and int(trainer.bad_validations) == 2
    at_four = l2o_tf.pretrained.load_rule(str(tmp_path / "best"))
    restored = MetaTrainer(_quadratic_config(meta_steps=8, validate_every=2, checkpoint_every=2), str(tmp_path))
    restored.checkpoint.read(str(tmp_path / "checkpoints" / "ckpt-4")).expect_partial()
    for best, saved in zip(at_four.weights, restored.rule.weights):
        np.testing.assert_array_equal(best.numpy(), saved.numpy())
    assert not np.array_equal(at_four.weights[0].numpy(), trainer.rule.weights[0].numpy())
    assert l2o_tf.spec.provenance(str(tmp_path / "best"))["meta_step"] == 4


def test_refuses_to_resume_into_a_different_run(tmp_path):
    MetaTrainer(_quadratic_config(meta_steps=2), str(tmp_path)).train(verbose=0)
    MetaTrainer(_quadratic_config(meta_steps=4), str(tmp_path)).train(verbose=0)  # more steps: fine
    with pytest.raises(ValueError, match="different config.*meta_lr"):
        MetaTrainer(_quadratic_config(meta_lr=0.5), str(tmp_path)).train(verbose=0)


def test_init_from_starts_every_arm_from_the_same_trained_weights(tmp_path):
    """A fine-tuning run starts from the source's weights (not its seed's), and its resume keeps its own."""
    source = MetaTrainer(_quadratic_config(meta_steps=20), str(tmp_path / "source"))
    source.train(verbose=0)
    trained = [w.numpy() for w in source.rule.weights]
    config = lambda **o: _quadratic_config(seed=7, init_from=str(tmp_path / "source"), **o)  # noqa: E731
    barely = MetaTrainer(config(meta_steps=1, meta_lr=1e-12), str(tmp_path / "a"))  # one step of size 1e-12
    barely.train(verbose=0)
    for mine, theirs in zip(barely.rule.weights, trained):
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=0, atol=1e-9)
    fresh = MetaTrainer(_quadratic_config(seed=7), str(tmp_path / "b"))
    assert not np.allclose(fresh.rule.weights[0].numpy(), trained[0])
    # fine-tuning moves on from the source; a resume restores the run's own weights, not the source's
    MetaTrainer(config(meta_steps=5), str(tmp_path / "c")).train(verbose=0)
    five = [w.numpy() for w in MetaTrainer(config(meta_steps=5), str(tmp_path / "c")).rule.weights]
    resumed = MetaTrainer(config(meta_steps=5), str(tmp_path / "c"))
    resumed.train(verbose=0)  # nothing left to do: restores step 5
    assert not np.allclose(resumed.rule.weights[0].numpy(), trained[0])
    assert not np.allclose(five[0], resumed.rule.weights[0].numpy())  # a bare trainer holds the seed's weights
    with pytest.raises(ValueError, match="init_from.*hidden_size"):
        MetaTrainer(_quadratic_config(rule_kwargs={"hidden_size": 4, "output_scale": 0.1},
                                      init_from=str(tmp_path / "source")), str(tmp_path / "d")).train(verbose=0)
    # a step-scaled start: the source's weights with its step times 0.5, for a rule built with that step
    scaled = MetaTrainer(_quadratic_config(rule_kwargs={"hidden_size": 8, "output_scale": 0.05}, meta_steps=1,
                                           meta_lr=1e-12, init_from=str(tmp_path / "source") + ":lr=0.5"),
                         str(tmp_path / "e"))
    scaled.train(verbose=0)
    for mine, theirs in zip(scaled.rule.weights, trained):
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="init_from.*output_scale"):  # the scale must match the rule it starts
        MetaTrainer(_quadratic_config(init_from=str(tmp_path / "source") + ":lr=0.5"), str(tmp_path / "f")).train(verbose=0)


def test_a_checkpoint_ships_the_rule_weights_it_holds(tmp_path):
    """package_pretrained --checkpoint: the weights of the run at that meta step (selected on validation), not
    the latest ones."""
    from train.package_pretrained import rule_at_checkpoint  # noqa: PLC0415

    MetaTrainer(_quadratic_config(meta_steps=4, checkpoint_every=2), str(tmp_path / "long")).train(verbose=0)
    short = MetaTrainer(_quadratic_config(meta_steps=2, checkpoint_every=2), str(tmp_path / "short"))
    short.train(verbose=0)
    latest = l2o_tf.pretrained.load_rule(str(tmp_path / "long"))
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(latest.weights, short.rule.weights))
    rule, step = rule_at_checkpoint(latest, str(tmp_path / "long" / "checkpoints" / "ckpt-2"))
    assert step == 2
    for mine, theirs in zip(rule.weights, short.rule.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    with pytest.raises(ValueError, match="no such checkpoint"):
        rule_at_checkpoint(latest, str(tmp_path / "long" / "checkpoints" / "ckpt-3"))


def test_a_config_option_chosen_after_meta_training_keeps_the_weights():
    """package_pretrained --rule_config (how `general` ships with step_horizon=500): the weights carry over, the
    option takes effect, and a change that would need other weights is refused."""
    rule = rules.AdafacMLP(hidden_size=4, seed=3)
    capped = l2o_tf.pretrained.with_config(rule, step_horizon=50)
    assert capped.get_config()["step_horizon"] == 50 and rule.get_config().get("step_horizon") != 50
    for mine, theirs in zip(capped.weights, rule.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    with pytest.raises(ValueError, match="changes the rule's weights"):
        l2o_tf.pretrained.with_config(rule, hidden_size=8)


class _NaNForSomeSeeds(tasks.Task):
    """The quadratic, except that optimizees whose seed is in ``bad`` have a NaN loss."""

    def __init__(self, bad):
        self.inner, self.bad = tasks.quadratic(batch_size=8, dim=4), tf.constant(sorted(bad), tf.int64)

    def init_params(self, seed):
        return self.inner.init_params(seed)

    def train_batch(self, seed, step):
        w, y = self.inner.train_batch(seed, step)
        is_bad = tf.reduce_any(tf.equal(tf.cast(seed, tf.int64), self.bad))
        return w, y + tf.where(is_bad, float("nan"), 0.0)

    def loss(self, params, batch):
        return self.inner.loss(params, batch)


def test_nonfinite_unrolls_are_skipped_and_counted(tmp_path):
    config = _quadratic_config(meta_steps=6)
    trainer = MetaTrainer(config, str(tmp_path), task=_NaNForSomeSeeds({seeds.training_optimizee(0, 1)}))
    trainer.train(verbose=0)
    assert int(trainer.skips) == 1  # trajectory 1 was NaN: skipped once, then a fresh optimizee
    assert all(np.all(np.isfinite(w.numpy())) for w in trainer.rule.weights)

    all_bad = MetaTrainer(_quadratic_config(meta_steps=50, max_consecutive_skips=3), str(tmp_path / "b"),
                          task=_NaNForSomeSeeds({seeds.training_optimizee(0, i) for i in range(10)}))
    before = [w.numpy().copy() for w in all_bad.rule.weights]
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite unrolls"):
        all_bad.train(verbose=0)
    for a, b in zip(before, all_bad.rule.weights):
        np.testing.assert_array_equal(a, b.numpy())  # never updated by a NaN unroll
    # Before --meta_loss_trajectory_start the meta-loss is a constant 0: the optimizee's own losses still tell.
    unscored = MetaTrainer(_quadratic_config(meta_steps=50, max_consecutive_skips=3, meta_loss_trajectory_start=20),
                           str(tmp_path / "c"), task=_NaNForSomeSeeds({seeds.training_optimizee(0, i) for i in range(10)}))
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite unrolls"):
        unscored.train(verbose=0)
    assert int(unscored.meta_step) == 3


def test_config_errors():
    with pytest.raises(ValueError, match="must be >= the unroll"):
        _quadratic_config(unroll=50, curriculum=(25,))
    with pytest.raises(ValueError, match="multiple of the unroll"):
        _quadratic_config(unroll=10, curriculum=(25,))
    with pytest.raises(ValueError, match="meta_steps must be >= 1"):
        _quadratic_config(meta_steps=0)


def _meta_train_command(out_dir):
    return [sys.executable, "-m", "train.meta_train", "--task=quadratic", "--task_kwargs=batch_size=8,dim=4",
            "--rule=rnnprop", "--rule_kwargs=hidden_size=8,output_scale=0.1", "--unroll=5", "--trajectory=20",
            "--meta_steps=40", "--meta_lr=1e-2", "--checkpoint_every=5", "--validate_every=10", f"--out_dir={out_dir}"]


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_meta_train_command(reference), cwd=ROOT, env=env, check=True, capture_output=True)

    process = subprocess.Popen(_meta_train_command(interrupted), cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (interrupted / "checkpoints" / "checkpoint").exists():
        assert process.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = tf.train.load_variable(str(interrupted / "checkpoints" / "ckpt-5"), "meta_step/.ATTRIBUTES/VARIABLE_VALUE")
    assert 5 <= saved < 40
    resumed = subprocess.run(_meta_train_command(interrupted), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stdout
    a = l2o_tf.pretrained.load_rule(str(reference)).weights
    b = l2o_tf.pretrained.load_rule(str(interrupted)).weights
    assert max(float(np.abs(x.numpy() - y.numpy()).max()) for x, y in zip(a, b)) <= 1e-6
    assert json.loads((interrupted / "config.json").read_text())["meta_steps"] == 40


def test_kills_while_checkpointing_every_step_never_leave_an_unloadable_checkpoint(tmp_path):
    """kill -9 at several moments of a run that checkpoints every step: every restart resumes, the end is exact."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = lambda out: [a.replace("--checkpoint_every=5", "--checkpoint_every=1") for a in _meta_train_command(out)]  # noqa: E731
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(command(reference), cwd=ROOT, env=env, check=True, capture_output=True)
    state_file = interrupted / "checkpoints" / "checkpoint"
    rng = np.random.default_rng(0)
    for kill in range(3):
        process = subprocess.Popen(command(interrupted), cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        before = state_file.stat().st_mtime_ns if state_file.exists() else 0
        deadline = time.time() + 120
        while not state_file.exists() or state_file.stat().st_mtime_ns == before:  # it is writing checkpoints
            assert process.poll() is None and time.time() < deadline, "no new checkpoint appeared"
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        latest = tf.train.latest_checkpoint(str(interrupted / "checkpoints"))
        step = tf.train.load_variable(latest, "meta_step/.ATTRIBUTES/VARIABLE_VALUE")  # loads: it is whole
        assert 1 <= step < 40
    resumed = subprocess.run(command(interrupted), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = l2o_tf.pretrained.load_rule(str(reference)).weights
    b = l2o_tf.pretrained.load_rule(str(interrupted)).weights
    assert max(float(np.abs(x.numpy() - y.numpy()).max()) for x, y in zip(a, b)) <= 1e-6


def test_keras_fit_follows_the_evaluation_trajectory():
    """One rule, two paths: model.fit with LearnedOptimizer and the evaluation unroll reach the same weights."""
    task = tasks.mnist_mlp(hidden_sizes=(6,), batch_size=16)
    rule = rules.RNNprop(seed=3, output_scale=0.1)
    seed, steps = 2 * 10**9, 12
    result = evaluate_rule(rule, task, steps, 1)
    params, _, _ = tf.function(lambda p, s: unroll_lib.run(task, rule, p, s, seed, 0, steps))(
        task.init_params(seed), rule.initial_state(784 * 6 + 6 + 60 + 10)
    )
    model = task.model_fn(seed)
    model.compile(optimizer=l2o_tf.LearnedOptimizer(rule), loss=task.loss_fn)
    batches = [task.train_batch(seed, t) for t in range(steps)]
    x = tf.concat([b[0] for b in batches], 0)
    y = tf.concat([b[1] for b in batches], 0)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for p, w in zip(params, model.trainable_weights):
        np.testing.assert_allclose(p.numpy(), w.numpy(), atol=1e-5)
    assert len(result["curve"]["mean"]) == steps


def test_recomputed_rule_gives_the_same_meta_gradient():
    task, rule = tasks.quadratic(batch_size=2, dim=3), rules.RNNprop(hidden_size=4, seed=1)
    grads = []
    for recompute in (False, True):
        with tf.GradientTape() as tape:
            result = unroll_lib.unroll(task, rule, task.init_params(0), rule.initial_state(6), 0, 0,
                                       UnrollConfig(6, recompute=recompute))
        grads.append(tape.gradient(result.meta_loss, rule.trainable_weights))
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in grads[0])
    assert scale > 0
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(*grads)) <= 1e-6 * max(scale, 1.0)


class _FixedQuadratic(tasks.Task):
    """A quadratic with no random batches: XLA's random numbers differ from TF's, so this isolates the compiler."""

    def init_params(self, seed):
        return [tf.constant(np.random.default_rng(seed).normal(size=6), tf.float32)]

    def train_batch(self, seed, step):
        return tf.constant([0.5, 1.0, 2.0, 4.0, 0.1, 3.0])

    def loss(self, params, batch):
        return 0.5 * tf.reduce_sum(batch * tf.square(params[0]))


def test_xla_compiled_unrolls_learn_the_same_weights(tmp_path):
    config = lambda jit: _quadratic_config(meta_steps=5, jit_compile=jit)  # noqa: E731
    plain = MetaTrainer(config(False), str(tmp_path / "plain"), task=_FixedQuadratic())
    xla = MetaTrainer(config(True), str(tmp_path / "xla"), task=_FixedQuadratic())
    plain.train(verbose=0)
    xla.train(verbose=0)
    initial = rules.get("rnnprop", seed=0, hidden_size=8, output_scale=0.1).get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain.rule.get_weights(), initial)) > 1e-3
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain.rule.get_weights(), xla.rule.get_weights())) <= 1e-5
