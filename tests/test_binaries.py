"""The absl binaries, optimizer specs and shipped pretrained optimizers, as a user meets them."""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules, spec
from l2o_tf.meta.config import MetaTrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# As a user runs them: TensorFlow's log level left to the binaries.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_evaluate_writes_curves_metrics_and_plot(tmp_path):
    output = tmp_path / "eval.json"
    result = _run("train.evaluate", "--optimizer=adam:lr=0.1,sgd:lr=0.01:momentum=0.9", "--task=quadratic",
                  "--task_kwargs=batch_size=4,dim=3", "--steps=30", "--seeds=2", "--report_at=10,30", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(output.read_text())
    assert set(data["optimizers"]) == {"adam:lr=0.1", "sgd:lr=0.01:momentum=0.9"}
    adam = data["optimizers"]["adam:lr=0.1"]
    assert len(adam["curve"]["mean"]) == 30 and set(adam["at_step"]) == {"10", "30"}
    assert len(adam["at_step"]["30"]["train_loss"]["values"]) == 2
    assert adam["at_step"]["30"]["train_loss"]["mean"] < adam["curve"]["mean"][0]
    assert data["command"].startswith("python -m train.evaluate")
    assert data["machine"]["tensorflow"] and data["machine"]["keras"]  # what the "seconds" were measured on
    if os.path.exists("/proc/cpuinfo"):
        assert "vector_extensions" in data["machine"]
    assert (tmp_path / "eval.png").stat().st_size > 1000


def test_evaluate_records_which_weights_a_run_dir_stood_for_and_warns_while_it_trains(tmp_path):
    """An out_dir evaluated mid-run is evaluated as it stood: the result records the meta step and a digest of the
    weights (here a run at meta step 5 of 10), and the log says so; a hand-designed rule has no source."""
    run = tmp_path / "run"
    l2o_tf.pretrained.save_rule(l2o_tf.pretrained.load_rule("rnnprop-mnist"), str(run / "optimizer"))
    (run / "config.json").write_text(json.dumps({"meta_steps": 10}))
    tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(run / "checkpoints"), 3).save(5)
    output = tmp_path / "eval.json"
    result = _run("train.evaluate", f"--optimizer={run}:lr=0.5,adam:lr=0.1", "--task=quadratic",
                  "--task_kwargs=batch_size=4,dim=3", "--steps=3", "--seeds=1", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{run}:lr=0.5 is from meta step 5 of the run's 10: the run is still training" in result.stderr
    optimizers = json.loads(output.read_text())["optimizers"]
    digest = hashlib.sha256((run / "optimizer" / "weights.npz").read_bytes()).hexdigest()[:16]
    assert optimizers[f"{run}:lr=0.5"]["source"] == {"directory": str(run / "optimizer"), "weights_sha256": digest,
                                                      "meta_steps": 10, "meta_step": 5}
    assert "source" not in optimizers["adam:lr=0.1"] and spec.provenance("adam:lr=0.1") is None
    shipped = spec.provenance("rnnprop-mnist:lr=2")
    assert "meta_step" not in shipped and shipped["directory"].endswith(os.path.join("pretrained", "rnnprop-mnist"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizer=adamx"], "Unknown optimizer 'adamx'"),
        (["--optimizer=adam:lr=fast"], "'fast' is not a number"),
        (["--optimizer=adam:lr=1e-3", "--task=mnist"], "Unknown task 'mnist'"),
        (["--optimizer=adam:lr=1e-3", "--seeds=0"], "--seeds must be >= 1"),
        (["--optimizer=adam:lr=1e-3", "--output=/proc/nope/x.json"], "/proc/nope"),
        (["--optimizer=adam"], "give its learning rate, e.g. adam:lr=1e-3"),
        (["--steps=5"], "--optimizer is required (see --help)"),
        (["--optimizer=adam:lr=1e-3", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
        (["--optimizer=adam:lr=1e-3", "stray"], "unexpected arguments ['stray']"),
    ],
)
def test_evaluate_bad_input_is_one_clear_line(args, message, tmp_path):
    extra = [] if any(a.startswith("--output") for a in args) else [f"--output={tmp_path / 'x.json'}"]
    result = _run("train.evaluate", "--steps=5", *args, *extra)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line: no TF start-up noise
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("binary, required", [
    ("train.evaluate", ["--optimizer", "--output"]), ("train.meta_train", ["--out_dir"]),
    ("train.adapt", ["--optimizer", "--baseline", "--output"]), ("export.export_saved_model", ["--optimizer", "--output"]),
    ("train.quickstart", []),
])
def test_help_exits_0_and_marks_required_flags(binary, required):
    result = _run(binary, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\nflags:\n", 1)[1].splitlines()
    for flag in required:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(flag + ":"))
        assert "(required)" in " ".join(lines[index:index + 3])
    assert "tf_logs: Show TensorFlow" in result.stdout


def test_console_scripts_run_from_any_directory(tmp_path):
    """The installed entry points (setup.cfg) work outside the repository."""
    script = os.path.join(os.path.dirname(sys.executable), "l2o-evaluate")
    if not os.path.exists(script):
        pytest.skip("l2o_tf is not pip-installed in this environment (no console scripts)")
    result = subprocess.run([script, "--optimizer=adam:lr=0.1", "--task=quadratic", "--task_kwargs=batch_size=4,dim=3",
                             "--steps=5", "--seeds=1", "--output=out.json"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out.json").exists()
    for name in ("l2o-quickstart", "l2o-meta-train", "l2o-adapt", "l2o-export"):
        assert os.path.exists(os.path.join(os.path.dirname(sys.executable), name))


def test_specs():
    sgd = spec.rule_from_spec("sgd:lr=0.1:momentum=0.9:nesterov=true")
    assert isinstance(sgd, rules.SGD) and (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.1, 0.9, True)
    assert spec.rule_from_spec("adam:lr=3e-3").learning_rate == 3e-3
    with pytest.raises(ValueError, match="not key=value"):
        spec.rule_from_spec("adam:3e-3")
    with pytest.raises(ValueError, match="Bad optimizer spec"):
        spec.rule_from_spec("adam:momentum=0.9")



@pytest.mark.parametrize("name", ["general", "dmlstm-mnist", "rnnprop-mnist"])
def test_a_learned_spec_with_lr_scales_every_update_and_keeps_the_state(name):
    """``NAME:lr=0.25`` is the shipped rule with every update times 0.25 (LearnedOptimizer's learning_rate, carried by
    the rule so the unrolls of train.evaluate run it); its state evolves exactly as the unscaled rule's."""
    base, scaled = spec.rule_from_spec(name), spec.rule_from_spec(f"{name}:lr=0.25")
    assert scaled.nominal_step == pytest.approx(0.25 * base.nominal_step)
    rng = np.random.default_rng(0)
    params = tf.constant(rng.normal(size=12), tf.float32)
    state_base, state_scaled = base.initial_state(12), scaled.initial_state(12)
    for step in range(3):
        grads = tf.constant(rng.normal(size=12), tf.float32)
        u_base, state_base = base(grads, params, state_base, tf.constant(step, tf.int64))
        u_scaled, state_scaled = scaled(grads, params, state_scaled, tf.constant(step, tf.int64))
        np.testing.assert_allclose(u_scaled.numpy(), 0.25 * u_base.numpy(), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(state_scaled.numpy(), state_base.numpy(), rtol=1e-5, atol=1e-9)
        params = params + u_base
    assert spec.split_step_scale("runs/x:lr=0.5") == ("runs/x", 0.5)
    assert spec.split_step_scale("adam:lr=0.5") == ("adam:lr=0.5", None)  # Adam's lr is its rate, not a scale
    with pytest.raises(ValueError, match="'fast' is not a number"):
        spec.rule_from_spec(f"{name}:lr=fast")
    with pytest.raises(ValueError, match="step scale must be > 0"):
        spec.rule_from_spec(f"{name}:lr=0")
    with pytest.raises(ValueError, match="Unknown optimizer"):
        spec.rule_from_spec("no-such-optimizer:lr=0.5")

SHIPPED = {
    "rnnprop-mnist": dict(task="mnist_mlp", regularizer="none", maml_inner_steps=0),
    "rnnprop-mnist-long": dict(task="mnist_mlp", regularizer="none", maml_inner_steps=0),
    "dmlstm-mnist": dict(task="mnist_mlp", regularizer="none", maml_inner_steps=0),
    "rnnprop-mnist-hessian": dict(task="mnist_mlp", regularizer="hessian_trace", maml_inner_steps=0),
    "rnnprop-mnist-entropy": dict(task="mnist_mlp", regularizer="local_entropy", maml_inner_steps=0),
    "rnnprop-lasso": dict(task="lasso", regularizer="none", maml_inner_steps=0, task_family=[0.1, 0.5, 1.0]),
    "rnnprop-lasso-ml2o": dict(task="lasso", regularizer="none", maml_inner_steps=1, maml_inner_optimizer="adam",
                               task_family=[0.1, 0.5, 1.0]),
    "general": dict(rule="adafac_mlp", regularizer="none", maml_inner_steps=0),
    "adafac-mnist-generalize": dict(rule="adafac_mlp", task="mnist_mlp", estimator="pes", meta_objective="validation",
                                    meta_loss_trajectory_start=500, regularizer="none", maml_inner_steps=0),
    "hierarchical-mnist-generalize": dict(rule="hierarchical", task="mnist_mlp", estimator="pes", optimizees=16,
                                          meta_objective="validation", meta_loss_trajectory_start=500,
                                          regularizer="none", maml_inner_steps=0),
}


def test_every_shipped_optimizer_is_checked():
    assert sorted(l2o_tf.pretrained.names()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_optimizers_load_and_record_their_training(name):
    assert name in l2o_tf.pretrained.names()
    optimizer = l2o_tf.pretrained.load(name)
    assert isinstance(optimizer, l2o_tf.LearnedOptimizer)
    assert sum(int(np.prod(w.shape)) for w in optimizer.rule.weights) < 10000
    info = l2o_tf.pretrained.training_info(name)
    assert info["command"].startswith("python -m train.meta_train")
    config = MetaTrainConfig.from_dict(info["config"]).flat()  # older, flat configs: defaults for newer options
    assert {key: config[key] for key in SHIPPED[name]} == SHIPPED[name]
    for key, value in SHIPPED[name].items():
        if key == "task_family":
            assert "--task_family=" + ",".join(f"{v:g}" for v in value) in info["command"]
        elif value not in ("none", 0):
            assert f"--{key}={value}" in info["command"]
    fresh = type(optimizer.rule)(**{k: v for k, v in optimizer.rule.get_config().items() if k != "name"})
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(optimizer.rule.weights, fresh.weights))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((8, 4)), np.zeros((8, 2)), verbose=0)


def test_quickstart_trains_a_keras_model(tmp_path):
    output = tmp_path / "quick.json"
    result = _run("train.quickstart", "--steps=30", "--adam_lr=0", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dmlstm-mnist: test accuracy" in result.stdout and "MNIST from:" in result.stdout
    run = json.loads(output.read_text())["runs"]["dmlstm-mnist"]
    assert run["test_accuracy"] > 0.3  # 30 steps from random init; chance is 0.1


def test_quickstart_offline_without_data_says_once_that_it_used_the_subset(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "L2O_DATA_DIR"}
    env.update(KERAS_HOME=str(tmp_path / "keras"), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    output = tmp_path / "quick.json"
    result = subprocess.run([sys.executable, "-m", "train.quickstart", "--steps=20", "--adam_lr=0",
                             f"--output={output}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("NOTE: RESULTS ON THE BUNDLED MNIST SUBSET") == 1
    assert "L2O_DATA_DIR" in result.stdout and "[MNIST SUBSET]" in result.stdout
    assert "SUBSET" not in result.stderr  # said once, on stdout, not again as a warning
    saved = json.loads(output.read_text())
    assert saved["data_notice"].startswith("NOTE: RESULTS ON THE BUNDLED MNIST SUBSET")
    bad = subprocess.run([sys.executable, "-m", "train.quickstart", "--optimizer=nope"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "Unknown optimizer 'nope'" in bad.stderr
    assert "Loading MNIST" not in bad.stdout  # flags are checked before any data loads


def test_unknown_pretrained_name():
    with pytest.raises(ValueError, match="Unknown optimizer 'rnnprop-imagenet'.*rnnprop-mnist"):
        l2o_tf.pretrained.load("rnnprop-imagenet")


def test_adapt_binary_compares_the_four_methods(tmp_path):
    for name, seed in (("ml2o", 1), ("vanilla", 2)):
        l2o_tf.pretrained.save_rule(rules.RNNprop(hidden_size=6, output_scale=0.1, seed=seed), str(tmp_path / name))
    output = tmp_path / "adapt.json"
    result = _run("train.adapt", f"--optimizer={tmp_path / 'ml2o'}", f"--baseline={tmp_path / 'vanilla'}",
                  "--task=lasso", "--task_sigma=10", "--task_dim=4", "--adapt_steps=2", "--adapt_unroll=5",
                  "--eval_steps=30", "--seeds=2", "--adam_lrs=0.01,0.1", "--adapt_lr=1e-3", "--baseline_adapt_lr=0.02",
                  f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(output.read_text())
    assert set(data["methods"]) == {"ml2o", "direct_transfer", "transfer_learning", "adam"}
    assert (data["methods"]["ml2o"]["adapt_lr"], data["methods"]["transfer_learning"]["adapt_lr"]) == (1e-3, 0.02)
    for method in data["methods"].values():
        assert all(f >= o - 1e-4 for f, o in zip(method["final_loss"]["values"], data["optimum"]["values"]))
        assert len(method["curve"]["mean"]) == 30
    adam = data["methods"]["adam"]
    assert adam["spec"] == "adam:lr=" + min(adam["all_learning_rates"], key=adam["all_learning_rates"].get)
    assert (tmp_path / "adapt.png").exists()


def _fake_evaluation(task, optimizers):
    """A train.evaluate result with given (train loss, test accuracy) per optimizer at its last step."""
    stat = lambda v: {"mean": v, "std": 0.01}  # noqa: E731
    return {"command": f"python -m train.evaluate --task={task}", "task": task, "steps": 10, "optimizers": {
        spec: {"seeds": [0, 1], "at_step": {"10": {"train_loss": stat(loss), "test_accuracy": stat(acc),
                                                   "generalization_gap": stat(0.1), "hessian_top_eigenvalue": stat(2.0),
                                                   "hessian_trace": stat(9.0)}}}
        for spec, (loss, acc) in optimizers.items()}}


def test_generalization_summary_tunes_the_baseline_on_training_loss(tmp_path):
    for task in ("mnist_mlp", "mnist_conv"):
        runs = {"runs/v": (0.4, 0.90), "adam:lr=0.1": (0.5, 0.95), "adam:lr=0.01": (0.3, 0.85)}
        (tmp_path / f"{task}.json").write_text(json.dumps(_fake_evaluation(task, runs)))
    output = tmp_path / "summary.json"
    result = _run("train.generalization_summary", f"--inputs={tmp_path}/m*.json", "--labels=runs/v=vanilla",
                  f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(output.read_text())["table"]
    assert set(table) == {"mnist_mlp", "mnist_conv"}
    assert table["mnist_mlp"]["adam (best lr)"]["spec"] == "adam:lr=0.01"  # lowest train loss, not best accuracy
    assert table["mnist_conv"]["vanilla"]["test_accuracy"]["mean"] == 0.90
    assert "| mnist_mlp | 90.00±1.00% / gap 0.100" in result.stdout
    assert (tmp_path / "summary.png").stat().st_size > 1000
    missing = _run("train.generalization_summary", "--inputs=/nope.json", f"--output={output}")
    assert missing.returncode == 2 and "no such file '/nope.json'" in missing.stderr


def test_generalization_summary_pairs_arms_over_meta_seeds_and_tunes_adam_on_validation(tmp_path):
    """Two meta-seeds per arm, three evaluation seeds: the paired difference, its SE over meta-seeds, and Adam's
    learning rate chosen by validation accuracy (not test accuracy, not training loss)."""
    def row(test, valid=None, loss=0.3):
        metrics = {"test_accuracy": test, "train_loss": [loss] * 3, "generalization_gap": [0.1] * 3}
        if valid is not None:
            metrics["validation_accuracy"] = valid
        return {"seeds": [0, 1, 2], "at_step": {"10": {
            m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for m, v in metrics.items()}}}

    optimizers = {
        "runs/v0": row([0.90, 0.91, 0.92]), "runs/v1": row([0.88, 0.90, 0.89]),
        "runs/a0": row([0.92, 0.93, 0.95]), "runs/a1": row([0.92, 0.93, 0.93]),
        "shipped": row([0.91, 0.91, 0.91]),  # one run: paired with every meta-seed of the baseline
        "adam:lr=0.1": row([0.80, 0.80, 0.80], valid=[0.95] * 3, loss=0.5),   # best validation accuracy
        "adam:lr=0.01": row([0.99, 0.99, 0.99], valid=[0.90] * 3, loss=0.1),  # best test accuracy and loss
    }
    (tmp_path / "e.json").write_text(json.dumps({"command": "c", "task": "mnist_mlp", "steps": 10, "optimizers": optimizers}))
    output = tmp_path / "s.json"
    result = _run("train.generalization_summary", f"--inputs={tmp_path}/e.json", "--tune_on=validation_accuracy",
                  "--labels=runs/v0=vanilla,runs/v1=vanilla,runs/a0=arm,runs/a1=arm,shipped=shipped",
                  "--baseline=vanilla", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(output.read_text())
    assert data["table"]["mnist_mlp"]["adam (best lr)"]["spec"] == "adam:lr=0.1"
    assert data["table"]["mnist_mlp"]["arm"]["meta_seeds"] == 2
    versus = data["paired_test_accuracy"]["mnist_mlp"]["arm"]
    per_meta_seed = [np.mean([0.02, 0.02, 0.03]), np.mean([0.04, 0.03, 0.04])]
    assert versus["vs vanilla"]["mean"] == pytest.approx(np.mean(per_meta_seed))
    assert versus["vs vanilla"]["se"] == pytest.approx(np.std(per_meta_seed, ddof=1) / np.sqrt(2))
    assert versus["vs vanilla"]["significant"]
    assert versus["vs adam (best lr)"]["mean"] == pytest.approx(np.mean([0.92, 0.93, 0.95, 0.92, 0.93, 0.93]) - 0.80)
    assert "arm vs vanilla: +3.00" in result.stdout
    one_run = data["paired_test_accuracy"]["mnist_mlp"]["shipped"]["vs vanilla"]
    base_means = [np.mean([0.90, 0.91, 0.92]), np.mean([0.88, 0.90, 0.89])]
    assert one_run["mean"] == pytest.approx(0.91 - np.mean(base_means)) and one_run["meta_seeds"] == 2
    assert one_run["se"] == pytest.approx(np.std(base_means, ddof=1) / np.sqrt(2))
    unlabelled = _run("train.generalization_summary", f"--inputs={tmp_path}/e.json", "--tune_on=validation_accuracy",
                      f"--output={output}")  # runs/v0 ... are now hand-designed families without validation accuracy
    assert unlabelled.returncode == 2 and "evaluate with --task_kwargs=validation_examples=N" in unlabelled.stderr


def test_generalization_summary_tunes_learned_step_scales_per_meta_seed_across_files(tmp_path):
    """--tune_step_scale: a labelled spec and its SPEC:lr=X runs (here in another file) are one grid per meta-seed,
    read at the scale with the best validation accuracy, never the best test accuracy; Adam's grid may span inputs
    too. Without the flag a scaled run of a labelled spec is one clear error, not a silent extra arm, and so is a
    run given twice."""
    def run(test, validation):
        return {"seeds": [0, 1], "at_step": {"10": {
            "test_accuracy": {"mean": test, "std": 0.0, "values": [test] * 2},
            "validation_accuracy": {"mean": validation, "std": 0.0, "values": [validation] * 2},
            "train_loss": {"mean": 0.1, "std": 0.0, "values": [0.1] * 2},
            "generalization_gap": {"mean": 0.1, "std": 0.0, "values": [0.1] * 2}}}}

    files = {"scale1.json": {"runs/v0": run(0.80, 0.80), "runs/v1": run(0.85, 0.90), "adam:lr=0.1": run(0.82, 0.85)},
             "scaled.json": {"runs/v0:lr=0.5": run(0.70, 0.88), "runs/v0:lr=0.25": run(0.99, 0.70),
                             "runs/v1:lr=0.5": run(0.95, 0.89), "adam:lr=0.01": run(0.81, 0.86)}}
    for name, optimizers in files.items():
        (tmp_path / name).write_text(json.dumps({"command": name, "task": "t", "steps": 10, "optimizers": optimizers}))
    output = tmp_path / "s.json"
    args = ("train.generalization_summary", f"--inputs={tmp_path}/scale1.json,{tmp_path}/scaled.json",
            "--tune_on=validation_accuracy", "--labels=runs/v0=vanilla,runs/v1=vanilla", "--baseline=vanilla",
            f"--output={output}")
    result = _run(*args, "--tune_step_scale")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(output.read_text())
    vanilla = summary["table"]["t"]["vanilla"]
    assert vanilla["spec"] == ["runs/v0:lr=0.5", "runs/v1"]  # meta-seed order kept; each its own scale
    assert vanilla["test_accuracy"]["mean"] == pytest.approx(np.mean([0.70, 0.85]))
    assert summary["step_scale_tuned"] is True
    assert summary["table"]["t"]["adam (best lr)"]["spec"] == "adam:lr=0.01"  # from the second input
    assert list(summary["table"]["t"]) == ["vanilla", "adam (best lr)"]  # columns in order of first appearance
    assert summary["paired_test_accuracy"]["t"] == {}  # the only arm is the baseline
    untuned = _run(*args)
    assert untuned.returncode == 2 and "'runs/v0:lr=0.5' is 'runs/v0' at a step scale: pass --tune_step_scale" \
        in untuned.stderr
    (tmp_path / "copy.json").write_text((tmp_path / "scale1.json").read_text())
    twice = _run(*(a.replace("scaled.json", "copy.json") for a in args))
    assert twice.returncode == 2 and "'runs/v0' on t is in two inputs" in twice.stderr


def test_generalization_summary_pairs_meta_seeds_in_the_order_the_inputs_are_given(tmp_path):
    """Meta-seed 0's file named so that it sorts after meta-seed 1's (a RUN/best file does): given in seed order,
    each arm meta-seed is still paired with its own baseline meta-seed."""
    def run(values):
        stat = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
        return {"seeds": [0, 1], "at_step": {"10": {"test_accuracy": stat, "train_loss": stat, "generalization_gap": stat}}}

    files = {"base.json": {"runs/v0": run([0.50, 0.52]), "runs/v1": run([0.90, 0.92])},
             "z_arm_s0.json": {"runs/a0": run([0.51, 0.53])}, "a_best_s1.json": {"runs/a1/best": run([0.93, 0.95])}}
    for name, optimizers in files.items():
        (tmp_path / name).write_text(json.dumps({"command": name, "task": "t", "steps": 10, "optimizers": optimizers}))
    output = tmp_path / "s.json"
    result = _run("train.generalization_summary", "--inputs=" + ",".join(str(tmp_path / f) for f in files),
                  "--labels=runs/v0=vanilla,runs/v1=vanilla,runs/a0=arm,runs/a1/best=arm", "--baseline=vanilla",
                  f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    versus = json.loads(output.read_text())["paired_test_accuracy"]["t"]["arm"]["vs vanilla"]
    assert versus["mean"] == pytest.approx(0.02)
    assert versus["se"] == pytest.approx(np.std([0.01, 0.03], ddof=1) / np.sqrt(2))  # sorted: 0.43 and -0.39


def test_generalization_summary_reads_each_run_at_its_validation_chosen_step(tmp_path):
    """--stop_on=validation_accuracy: each meta-seed and each Adam rate is read at the reported step with its best
    validation accuracy (Adam's rate and step chosen together), never at the best test accuracy."""
    def run(steps):  # {step: (test, validation)}, three evaluation seeds each
        return {"seeds": [0, 1, 2], "at_step": {str(k): {
            "test_accuracy": {"mean": t, "std": 0.0, "values": [t] * 3},
            "validation_accuracy": {"mean": v, "std": 0.0, "values": [v] * 3},
            "train_loss": {"mean": 0.1, "std": 0.0, "values": [0.1] * 3},
            "generalization_gap": {"mean": 0.1, "std": 0.0, "values": [0.1] * 3}} for k, (t, v) in steps.items()}}

    optimizers = {
        "runs/v0": run({5: (0.90, 0.91), 10: (0.85, 0.86)}),  # peaks early
        "runs/v1": run({5: (0.80, 0.81), 10: (0.95, 0.90)}),  # peaks late
        "adam:lr=0.1": run({5: (0.70, 0.93), 10: (0.99, 0.92)}),  # best validation at step 5
        "adam:lr=0.01": run({5: (0.60, 0.70), 10: (0.97, 0.92)}),
    }
    (tmp_path / "e.json").write_text(json.dumps({"command": "c", "task": "t", "steps": 10, "optimizers": optimizers}))
    output = tmp_path / "s.json"
    args = ("train.generalization_summary", f"--inputs={tmp_path}/e.json", "--tune_on=validation_accuracy",
            "--labels=runs/v0=vanilla,runs/v1=vanilla", f"--output={output}")
    result = _run(*args, "--stop_on=validation_accuracy")
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(output.read_text())["table"]["t"]
    assert table["vanilla"]["step"] == [5, 10]
    assert table["vanilla"]["test_accuracy"]["mean"] == pytest.approx(np.mean([0.90, 0.95]))
    assert table["adam (best lr)"]["spec"] == "adam:lr=0.1" and table["adam (best lr)"]["step"] == 5
    assert table["adam (best lr)"]["test_accuracy"]["mean"] == pytest.approx(0.70)
    assert "@ step 5/10" in result.stdout
    last = _run(*args)  # without --stop_on: the last step
    assert last.returncode == 0 and json.loads(output.read_text())["table"]["t"]["vanilla"]["step"] == [10, 10]
    del optimizers["runs/v0"]["at_step"]["5"]["validation_accuracy"]
    (tmp_path / "e.json").write_text(json.dumps({"command": "c", "task": "t", "steps": 10, "optimizers": optimizers}))
    missing = _run(*args, "--stop_on=validation_accuracy")
    assert missing.returncode == 2 and "--stop_on=validation_accuracy: an input has no validation_accuracy" in missing.stderr
