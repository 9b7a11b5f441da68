r"""M-L2O evaluation: test-time adaptation on an out-of-distribution task, against the baselines.

    python -m train.adapt --optimizer=rnnprop-lasso-ml2o --baseline=rnnprop-lasso --task=lasso \
        --task_sigma=100 --task_dim=10 --adapt_steps=5 --eval_steps=1000 --seeds=10 --output=FILE.json

Methods, with the same adaptation budget (--adapt_steps Adam steps of --adapt_lr on the meta-loss
of --adapt_unroll-step unrolls of fresh target optimizees, seeds disjoint from the evaluation ones):
  ml2o               the M-L2O optimizer, adapted;
  direct_transfer    the vanilla baseline applied as is;
  transfer_learning  the vanilla baseline, adapted;
  adam               Adam at its best learning rate among --adam_lrs (by mean final loss).
The JSON has per method the final loss and log10(final loss - optimum) (mean, std, values) and the
mean curve; the optimum of each instance comes from FISTA (LASSO), least squares (quadratic) or is 0.
"""

import json
import os
import sys

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import numpy as np
import keras
from absl import flags

from l2o_tf import spec, tasks
from l2o_tf import seeds
from l2o_tf.evaluate import evaluate_rule
from l2o_tf.meta.adaptation import adapt
from l2o_tf.plots import plot_curves

FLAGS = flags.FLAGS
flags.DEFINE_string("optimizer", None, "The M-L2O optimizer (shipped name or out_dir).")
flags.DEFINE_string("baseline", None, "The vanilla optimizer trained on the same family (shipped name or out_dir).")
flags.DEFINE_string("task", "lasso", "Target task: lasso, quadratic or rosenbrock.")
flags.DEFINE_float("task_sigma", 100.0, "Target task's sigma (the distribution shift).")
flags.DEFINE_integer("task_dim", 10, "Target task's dimension.")
cli.define_kwargs_flag("task_kwargs", "Further task arguments as key=value.", module_name=__name__)
flags.DEFINE_integer("adapt_steps", 5, "Adaptation steps (M-L2O and transfer learning).")
flags.DEFINE_float("adapt_lr", 1e-3, "Adam learning rate of the adaptation.")
flags.DEFINE_float("baseline_adapt_lr", None, "Adaptation learning rate of transfer_learning (default: --adapt_lr), "
                   "for when each adapted method's rate was chosen on its own on selection instances.")
flags.DEFINE_integer("adapt_unroll", 20, "Unroll length of the adaptation meta-loss.")
flags.DEFINE_boolean("adapt_log_loss", False, "Adapt on the log-loss meta-loss (as --log_loss in meta-training).")
flags.DEFINE_integer("eval_steps", 1000, "Optimizee steps per evaluation run.")
flags.DEFINE_integer("seeds", 10, "Evaluation optimizees.")
cli.define_seed_offset_flag(__name__)
flags.DEFINE_list("adam_lrs", ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1"], "Adam learning rates to pick the best from.")
flags.DEFINE_string("output", None, "Result JSON path; the plot goes beside it as .png.")


def summarize(values):
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}


def main(argv):
    if FLAGS.adapt_steps < 0:
        raise ValueError(f"--adapt_steps must be >= 0, got {FLAGS.adapt_steps}.")
    if FLAGS.eval_steps < 1 or FLAGS.seeds < 1:
        raise ValueError("--eval_steps and --seeds must be >= 1.")
    cli.check_writable(FLAGS.output)
    task = tasks.get(FLAGS.task, sigma=FLAGS.task_sigma, dim=FLAGS.task_dim, **cli.parse_kwargs(FLAGS.task_kwargs, "task_kwargs"))
    if not hasattr(task, "optimum"):
        raise ValueError(f"--task {FLAGS.task!r} has no known optimum; use lasso, quadratic, rosenbrock or rastrigin.")
    ml2o, baseline = spec.rule_from_spec(FLAGS.optimizer), spec.rule_from_spec(FLAGS.baseline)
    eval_seeds = [FLAGS.seed_offset + i for i in range(FLAGS.seeds)]
    optima = np.array([task.optimum(s) for s in eval_seeds])

    baseline_lr = FLAGS.adapt_lr if FLAGS.baseline_adapt_lr is None else FLAGS.baseline_adapt_lr

    def adapted(rule, learning_rate):
        return adapt(rule, task, steps=FLAGS.adapt_steps, learning_rate=learning_rate,
                     unroll_length=FLAGS.adapt_unroll, seed=seeds.ADAPTATION, log_loss=FLAGS.adapt_log_loss)

    runs = 3 + len(FLAGS.adam_lrs)
    bar = keras.utils.Progbar(runs * FLAGS.seeds * FLAGS.eval_steps, unit_name="optimizee step")

    def measure(rule):
        result = evaluate_rule(rule, task, FLAGS.eval_steps, FLAGS.seeds, seed_offset=FLAGS.seed_offset,
                               progress=bar.add)
        final = np.array(result["at_step"][str(FLAGS.eval_steps)]["train_loss"]["values"])
        excess = np.maximum(final - optima, 1e-12)
        return {"final_loss": summarize(final), "log10_excess_loss": summarize(np.log10(excess)),
                "excess_loss": summarize(excess), "curve": result["curve"]}

    methods = {
        "ml2o": dict(measure(adapted(ml2o, FLAGS.adapt_lr)), spec=FLAGS.optimizer, adapt_steps=FLAGS.adapt_steps,
                     adapt_lr=FLAGS.adapt_lr),
        "direct_transfer": dict(measure(baseline), spec=FLAGS.baseline, adapt_steps=0),
        "transfer_learning": dict(measure(adapted(baseline, baseline_lr)), spec=FLAGS.baseline,
                                  adapt_steps=FLAGS.adapt_steps, adapt_lr=baseline_lr),
    }
    adam_runs = {lr: measure(spec.rule_from_spec(f"adam:lr={lr}")) for lr in FLAGS.adam_lrs}
    best_lr = min(adam_runs, key=lambda lr: adam_runs[lr]["final_loss"]["mean"])
    methods["adam"] = dict(adam_runs[best_lr], spec=f"adam:lr={best_lr}",
                           all_learning_rates={lr: r["final_loss"]["mean"] for lr, r in adam_runs.items()})
    results = {
        "command": "python -m train.adapt " + " ".join(sys.argv[1:]),
        "task": FLAGS.task, "task_sigma": FLAGS.task_sigma, "task_dim": FLAGS.task_dim,
        "eval_steps": FLAGS.eval_steps, "seeds": eval_seeds, "optimum": summarize(optima),
        "optimum_method": {"lasso": "FISTA, 20000 iterations, float64", "quadratic": "least squares"}.get(FLAGS.task, "known minimum 0"),
        "methods": methods,
    }
    for name, m in methods.items():
        print(f"{name:>18} ({m['spec']}): final loss {m['final_loss']['mean']:.6g} +- {m['final_loss']['std']:.3g}, "
              f"excess {m['excess_loss']['mean']:.4g} +- {m['excess_loss']['std']:.3g}, "
              f"log10(excess) {m['log10_excess_loss']['mean']:.3f} +- {m['log10_excess_loss']['std']:.3f}")
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=1)
    mean_optimum = float(optima.mean())
    curves = {name: {"mean": np.maximum(np.asarray(m["curve"]["mean"]) - mean_optimum, 1e-12).tolist(),
                     "std": m["curve"]["std"]} for name, m in methods.items()}
    plot_path = os.path.splitext(FLAGS.output)[0] + ".png"
    plot_curves(curves, plot_path, f"{FLAGS.task} sigma={FLAGS.task_sigma:g}: excess loss, mean of {FLAGS.seeds} seeds",
                ylabel="loss - optimum")
    print(f"wrote {FLAGS.output} and {plot_path}")


def run():
    cli.run(main, required=("optimizer", "baseline", "output"))


if __name__ == "__main__":
    run()
