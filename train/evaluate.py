r"""Evaluate optimizers on a task: per-step training-loss curves and held-out metrics, JSON + PNG.

    python -m train.evaluate --optimizer=rnnprop-mnist,adam:lr=1e-2 --task=mnist_mlp \
        --steps=1000 --seeds=5 --report_at=100,1000 --output=results/eval.json

--optimizer takes a comma-separated list of specs: a shipped name (l2o_tf.pretrained.names()),
a meta-training out_dir, or a hand-designed rule such as adam:lr=1e-3 or sgd:lr=0.1:momentum=0.9.
"""

import json
import os
import platform
import sys
import time

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import keras
from absl import flags

from l2o_tf import __version__, spec, tasks
from l2o_tf.evaluate import evaluate_rule
from l2o_tf.plots import plot_curves

FLAGS = flags.FLAGS
flags.DEFINE_list("optimizer", None, "Optimizer specs to evaluate (comma-separated).")
flags.DEFINE_string("task", "mnist_mlp", "Task name (l2o_tf.tasks.names()).")
flags.DEFINE_list("task_kwargs", [], "Task arguments as key=value.")
flags.DEFINE_integer("steps", 1000, "Optimizee steps per run.")
flags.DEFINE_integer("seeds", 5, "Optimizees (seeds) per optimizer.")
flags.DEFINE_list("report_at", [], "Step counts at which to report held-out metrics (default: --steps).")
cli.define_seed_offset_flag(__name__)
flags.DEFINE_boolean("sharpness", False, "Also report the top Hessian eigenvalue and trace at the reported steps.")
flags.DEFINE_string("output", None, "Result JSON path; the plot goes beside it as .png.")


def main(argv):
    if FLAGS.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {FLAGS.steps}.")
    if FLAGS.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {FLAGS.seeds}.")
    cli.check_writable(FLAGS.output)
    task = tasks.get(FLAGS.task, **cli.parse_kwargs(FLAGS.task_kwargs, "task_kwargs"))
    report_at = [int(r) for r in FLAGS.report_at] or [FLAGS.steps]
    rules = {s: spec.rule_from_spec(s) for s in FLAGS.optimizer}  # resolve all before running any
    results = {
        "command": "python -m train.evaluate " + " ".join(sys.argv[1:]),
        "task": FLAGS.task,
        "task_kwargs": cli.parse_kwargs(FLAGS.task_kwargs, "task_kwargs"),
        "steps": FLAGS.steps,
        "seeds": FLAGS.seeds,
        "l2o_tf_version": __version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "optimizers": {},
    }
    bar = keras.utils.Progbar(len(rules) * FLAGS.seeds * FLAGS.steps, unit_name="optimizee step")
    for name, rule in rules.items():
        start = time.time()
        result = evaluate_rule(rule, task, FLAGS.steps, FLAGS.seeds, report_at, measure_sharpness=FLAGS.sharpness,
                               seed_offset=FLAGS.seed_offset, progress=bar.add)
        result["seconds"] = time.time() - start
        results["optimizers"][name] = result
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
                + (cli.SUBSET_TITLE if notice else ""))
    print(f"wrote {FLAGS.output} and {plot_path}")


def run():
    cli.run(main, required=("optimizer", "output"))


if __name__ == "__main__":
    run()
