r"""Evaluate optimizers on a task: per-step training-loss curves and held-out metrics, JSON + PNG.

    python -m train.evaluate --optimizer=rnnprop-mnist,adam:lr=1e-2 --task=mnist_mlp \
        --steps=1000 --seeds=5 --report_at=100,1000 --output=results/eval.json

--optimizer takes a comma-separated list of specs: a shipped name (l2o_tf.pretrained.names()),
a meta-training out_dir, or a hand-designed rule such as adam:lr=1e-3 or sgd:lr=0.1:momentum=0.9.

With --suite=general it judges learned optimizers on the generalization suite (l2o_tf.suite: 10
Keras models outside the meta-training family, each trained with model.fit) against Keras Adam
at 1e-3 and Adam tuned per task; the first --optimizer is the candidate the summary is about:

    python -m train.evaluate --suite=general --optimizer=general,dmlstm-mnist,rnnprop-mnist \
        --adapt --steps=1000 --seeds=3 --output=results/suite_general.json

Finished runs are kept beside the output (<output>_runs/<task>.jsonl): a stopped suite resumes,
and --suite_tasks runs a subset (for example one process per core).
"""

import json
import os
import sys
import time

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import keras
from absl import flags, logging

from l2o_tf import __version__, machine, spec, tasks
from l2o_tf.evaluate import evaluate_rule
from l2o_tf.plots import plot_curves

FLAGS = flags.FLAGS
flags.DEFINE_list("optimizer", None, "Optimizer specs to evaluate (comma-separated).")
flags.DEFINE_string("task", "mnist_mlp", "Task name (l2o_tf.tasks.names()).")
cli.define_kwargs_flag("task_kwargs", "Task arguments as key=value.", module_name=__name__)
flags.DEFINE_integer("steps", 1000, "Optimizee steps per run.")
flags.DEFINE_integer("seeds", 5, "Optimizees (seeds) per optimizer.")
flags.DEFINE_list("report_at", [], "Step counts at which to report held-out metrics (default: --steps).")
cli.define_seed_offset_flag(__name__)
flags.DEFINE_boolean("sharpness", False, "Also report the top Hessian eigenvalue and trace at the reported steps.")
flags.DEFINE_string("output", None, "Result JSON path; the plot goes beside it as .png.")
flags.DEFINE_enum("suite", None, ["general", "general_validation", "general_validation_ood"],
                  "Evaluate on the generalization suite with model.fit instead of --task (general_validation_ood: "
                  "configurations drawn outside the general family, what a general optimizer is selected on; "
                  "general_validation: held-out family configurations).")
flags.DEFINE_list("suite_tasks", [], "With --suite: only these suite tasks (default: all).")
flags.DEFINE_boolean("adapt", False, "With --suite: also run the first optimizer with AdaptOnFit.")


def suite_main():
    """--suite: the generalization suite through model.fit (see the module docstring)."""
    from l2o_tf import suite  # noqa: PLC0415

    if FLAGS.steps < suite.FINAL_WINDOW + 1:
        raise ValueError(f"--suite needs --steps > {suite.FINAL_WINDOW} (the final loss is the mean of the last "
                         f"{suite.FINAL_WINDOW}), got {FLAGS.steps}.")
    task_list = ([suite.get(name, suite=FLAGS.suite) for name in FLAGS.suite_tasks] if FLAGS.suite_tasks
                 else list(suite.SUITES[FLAGS.suite]()))
    candidates = {s: (lambda s=s: spec.rule_from_spec(s)) for s in FLAGS.optimizer}
    for name in FLAGS.optimizer:
        if name.split(":")[0].lower() in spec.HAND_DESIGNED:
            raise ValueError(f"--suite compares learned optimizers with Keras Adam itself; drop {name!r} from --optimizer.")
    store = suite.RunStore(os.path.splitext(FLAGS.output)[0] + "_runs")
    total = len(task_list) * (len(suite.ADAM_GRID) + FLAGS.seeds * (2 + len(FLAGS.optimizer) + int(FLAGS.adapt)))
    bar = keras.utils.Progbar(total, unit_name="run")
    candidate = FLAGS.optimizer[0]
    results = suite.run_suite(candidates, task_list, store, seeds=FLAGS.seeds, steps=FLAGS.steps,
                              adapt=candidate if FLAGS.adapt else None,
                              progress=lambda task, label, seed: bar.add(1))
    out = {
        "command": "python -m train.evaluate " + " ".join(sys.argv[1:]),
        "suite": FLAGS.suite, "steps": FLAGS.steps, "seeds": list(range(FLAGS.seeds)),
        "tuning_seed": suite.TUNING_SEED, "adam_grid": list(suite.ADAM_GRID), "candidate": candidate,
        "final_loss": f"mean minibatch training loss of the last {suite.FINAL_WINDOW} steps, then mean over seeds",
        "l2o_tf_version": __version__, "machine": machine.describe(),
        "machine_note": "machine: where this file was collected; each optimizer's machines: where its stored runs "
                        "were computed (a suite resumes from runs of earlier processes, maybe on other CPUs)",
        "tasks": results,
        "summary": suite.summarize(results, candidate),
    }
    notices = {cli.subset_notice(t["data_source"]) for t in results.values()} - {None}
    if notices:
        out["data_notice"] = sorted(notices)
    for name, task in results.items():
        cells = ", ".join(f"{label} {arm['final_loss']:.4g}" for label, arm in task["optimizers"].items())
        print(f"{name} (Adam tuned at {task['tuned_lr']:g}): {cells}")
    for arm, row in out["summary"].items():
        if isinstance(row, dict):
            print(f"{candidate} vs {arm}: lower final train loss on {row['candidate_lower_train_loss']:.0%} of "
                  f"{row['tasks']} tasks, worst ratio {row['worst_loss_ratio']:.3g}, higher test accuracy on "
                  + (f"{row['candidate_higher_test_accuracy']:.0%}" if row["candidate_higher_test_accuracy"] is not None
                     else "n/a") + " of the classification tasks")
    for notice in sorted(notices):
        print(notice)
    with open(FLAGS.output, "w") as f:
        json.dump(out, f, indent=1)
    plot_path = os.path.splitext(FLAGS.output)[0] + ".png"
    suite.plot_grid(results, plot_path, f"generalization suite: mean over {FLAGS.seeds} seeds"
                    + cli.subset_title(*notices))
    print(f"wrote {FLAGS.output} and {plot_path}")


def main(argv):
    if FLAGS.suite:
        cli.check_writable(FLAGS.output)
        return suite_main()
    if FLAGS.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {FLAGS.steps}.")
    if FLAGS.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {FLAGS.seeds}.")
    cli.check_writable(FLAGS.output)
    task = tasks.get(FLAGS.task, **cli.parse_kwargs(FLAGS.task_kwargs, "task_kwargs"))
    report_at = [int(r) for r in FLAGS.report_at] or [FLAGS.steps]
    sources = {s: spec.provenance(s) for s in FLAGS.optimizer}  # what is loaded next, recorded with the results
    rules = {s: spec.rule_from_spec(s) for s in FLAGS.optimizer}  # resolve all before running any
    for name, source in sources.items():
        if source and source.get("meta_steps") is not None and source.get("meta_step") != source["meta_steps"]:
            logging.warning("%s is from meta step %s of the run's %s: the run is still training or stopped early; "
                            "its results are for those weights (recorded as 'source').",
                            name, source.get("meta_step"), source["meta_steps"])
    results = {
        "command": "python -m train.evaluate " + " ".join(sys.argv[1:]),
        "task": FLAGS.task,
        "task_kwargs": cli.parse_kwargs(FLAGS.task_kwargs, "task_kwargs"),
        "steps": FLAGS.steps,
        "seeds": FLAGS.seeds,
        "l2o_tf_version": __version__,
        "machine": machine.describe(),  # CPU model, vector extensions, TF / Keras versions: "seconds" depend on them
        "optimizers": {},
    }
    bar = keras.utils.Progbar(len(rules) * FLAGS.seeds * FLAGS.steps, unit_name="optimizee step")
    for name, rule in rules.items():
        start = time.time()
        result = evaluate_rule(rule, task, FLAGS.steps, FLAGS.seeds, report_at, measure_sharpness=FLAGS.sharpness,
                               seed_offset=FLAGS.seed_offset, progress=bar.add)
        result["seconds"] = time.time() - start
        if sources[name]:
            result["source"] = sources[name]
        results["optimizers"][name] = result
    for name, source in sources.items():
        if source and spec.provenance(name)["weights_sha256"] != source["weights_sha256"]:
            logging.warning("%s changed on disk during this evaluation (a run still training?): its results are for "
                            "the weights loaded at the start, digest %s.", name, source["weights_sha256"])
            results["optimizers"][name]["source"]["changed_during_evaluation"] = True
    notice = cli.subset_notice(getattr(task, "data_source", None))
    if hasattr(task, "data_source"):
        results["data_source"] = task.data_source
        results["data_notice"] = notice
        print(f"data: {task.data_source}")
    for name, result in results["optimizers"].items():
        summary = ", ".join(
            f"step {r}: train loss {m['train_loss']['mean']:.4f}"
            + (f", test acc {m['test_accuracy']['mean']:.4f} +- {m['test_accuracy']['std']:.4f}" if "test_accuracy" in m else "")
            for r, m in result["at_step"].items()
        )
        print(f"{name}: {summary}")
    if notice:
        print(notice)
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=1)
    plot_path = os.path.splitext(FLAGS.output)[0] + ".png"
    plot_curves({k: v["curve"] for k, v in results["optimizers"].items()}, plot_path,
                f"{FLAGS.task}: mean over {FLAGS.seeds} seeds (band: +-1 std)"
                + cli.subset_title(notice))
    print(f"wrote {FLAGS.output} and {plot_path}")


def run():
    cli.run(main, required=("optimizer", "output"))


if __name__ == "__main__":
    run()
