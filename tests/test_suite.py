"""The generalization suite: every task is outside the general family, fit_run records each step's own
loss, finished runs resume from the store, and the summary counts wins as stated."""

import types

import keras
import numpy as np
import pytest

from l2o_tf import suite
from l2o_tf.tasks import general


def _tiny_task(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    data = types.SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y, source="in-memory")
    model_fn = lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])  # noqa: E731
    return suite.SuiteTask("tiny", "a test", model_fn, lambda: data, batch_size=n), data


def test_fit_run_records_each_steps_own_minibatch_loss():
    """Full-batch SGD: step k's loss is the loss of the model after k updates, which we recompute by hand."""
    task, data = _tiny_task()
    steps = suite.FINAL_WINDOW + 5
    result = suite.fit_run(task, lambda: keras.optimizers.SGD(0.5), seed=3, steps=steps)
    keras.utils.set_random_seed(3)
    model = task.model_fn()
    loss_fn, optimizer = task.loss(), keras.optimizers.SGD(0.5)
    expected = []
    for _ in range(steps):
        import tensorflow as tf  # noqa: PLC0415

        with tf.GradientTape() as tape:
            loss = loss_fn(data.y_train, model(data.x_train))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        expected.append(float(loss))
    np.testing.assert_allclose(result["losses"], expected, rtol=1e-4, atol=1e-5)
    assert result["final_loss"] == pytest.approx(np.mean(expected[-suite.FINAL_WINDOW:]), rel=1e-4)
    assert result["first_loss"] > result["final_loss"] and not result["diverged"]
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert "adaptation_kept" not in result

    class Decides(keras.callbacks.Callback):  # what fit_run reads off AdaptOnFit
        kept = [False]

    adapted = suite.fit_run(task, lambda: keras.optimizers.SGD(0.5), seed=3, steps=steps, callbacks=(Decides(),))
    assert adapted["adaptation_kept"] == [False]


def test_suite_tasks_lie_outside_the_general_family():
    """No suite model is a configuration the family can sample (compared by what defines a family model)."""
    names = [t.name for t in suite.tasks()]
    assert len(names) == len(set(names)) >= 10
    assert any(t.convex for t in suite.tasks()) and any(not t.classification for t in suite.tasks())
    assert any("lm" in n for n in names) and any("bn" in n for n in names)
    family_batches = set(general.BATCH_SIZES)
    assert all(t.batch_size not in family_batches for t in suite.tasks())  # even the batch sizes are unseen
    with pytest.raises(ValueError, match="Unknown suite task 'nope'"):
        suite.get("nope")


def test_validation_tasks_are_held_out_family_configurations_at_the_suites_scale():
    """What `general` is selected on: family configurations the run never trained on (seeds from 1000), the
    family's own models (same parameter count as the meta-training task's template), none in the suite."""
    tasks = suite.validation_tasks(count=3)
    assert [t.name for t in tasks] == [general.sample(s).name for s in (1000, 1001, 1002)]  # none augmented
    for t in tasks:
        config = general.sample(int(t.name.split("-")[0][len("general"):]))
        assert config.seed >= suite.VALIDATION_FIRST_SEED
        keras.utils.set_random_seed(0)
        model = t.model_fn()
        assert model.count_params() <= suite.VALIDATION_MAX_PARAMS
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == sum(int(np.prod(p.shape)) for p in general.build(config).init_params(0))
        assert t.batch_size == config.batch_size
    assert not {t.name for t in tasks} & {t.name for t in suite.tasks()}
    assert suite.get(tasks[1].name, suite="general_validation").name == tasks[1].name
    with pytest.raises(ValueError, match="Unknown suite task 'nope' \\(--suite=general_validation\\)"):
        suite.get("nope", suite="general_validation")


def test_out_of_family_validation_tasks_leave_the_family_on_every_axis_it_samples():
    """What `general` is selected on since the seventh round: drawn outside the family's sets (activations,
    resolutions, batch sizes; a kind the family has differs in kernel, stride, pooling or heads), every kind present, at the suite's scale, deterministic, none a suite task."""
    tasks = suite.ood_validation_tasks()
    assert len(tasks) == 10 and len({t.name for t in tasks}) == 10
    assert {t.name.split("-")[1] for t in tasks} == set(suite.OOD_KINDS)
    assert not set(suite.OOD_ACTIVATIONS) & set(general.ACTIVATIONS)
    assert not set(suite.OOD_RESOLUTIONS) & set(general.RESOLUTIONS)
    assert not set(suite.OOD_BATCH_SIZES) & set(general.BATCH_SIZES)
    assert all(t.batch_size in suite.OOD_BATCH_SIZES for t in tasks)
    for t in tasks:
        keras.utils.set_random_seed(0)
        assert t.model_fn().count_params() <= suite.VALIDATION_MAX_PARAMS
    assert [t.name for t in tasks[:2]] == [
        "ood0-deep_mlp-mnist-20px-elu-40x5-b40", "ood1-residual_mlp-mnist-12px-mish-96x2-b50"]  # the same draws everywhere
    assert not {t.name for t in tasks} & {t.name for t in suite.tasks()}
    assert any(not t.classification for t in tasks)
    assert suite.get(tasks[5].name, suite="general_validation_ood").name == tasks[5].name


def test_run_store_resumes_and_summary_counts(tmp_path):
    task, _ = _tiny_task()
    store = suite.RunStore(str(tmp_path))
    results = suite.run_suite({}, [task], store, seeds=1, steps=suite.FINAL_WINDOW + 1)
    runs = {lr: store.get("tiny", suite.adam_label(lr), suite.TUNING_SEED, suite.FINAL_WINDOW + 1)
            for lr in suite.ADAM_GRID}
    assert all(runs.values())
    assert {r["machine"] for r in runs.values()} == {suite.run_machine()}  # rounding differs between CPUs
    assert results["tiny"]["optimizers"]["adam tuned"]["machines"] == [suite.run_machine()]
    tuned = results["tiny"]["tuned_lr"]
    assert runs[tuned]["final_loss"] == min(r["final_loss"] for r in runs.values())
    again = suite.run_suite({}, [task], suite.RunStore(str(tmp_path)), seeds=1, steps=suite.FINAL_WINDOW + 1)
    assert again == results  # read back, not re-run (a re-run would draw other timings)
    fake = {"a": {"optimizers": {"c": {"final_loss": 1.0, "test_loss": 1.0, "test_accuracy": 0.9, "diverged": 0},
                                 "b": {"final_loss": 2.0, "test_loss": 0.5, "test_accuracy": 0.95, "diverged": 0}}},
            "b": {"optimizers": {"c": {"final_loss": 3.0, "test_loss": 1.0, "test_accuracy": 0.9, "diverged": 1},
                                 "b": {"final_loss": 1.5, "test_loss": 2.0, "test_accuracy": 0.5, "diverged": 0}}}}
    summary = suite.summarize(fake, "c")
    assert summary["b"]["candidate_lower_train_loss"] == 0.5 and summary["b"]["worst_loss_ratio"] == 2.0
    assert summary["b"]["candidate_higher_test_accuracy"] == 0.5 and summary["candidate_diverged_runs"] == 1
