r"""Summarise a generalization study from train.evaluate result files: a JSON table, a PNG, a Markdown table.

    python -m train.generalization_summary --inputs=results/generalization/*.json \
        --labels=runs/study-vanilla=vanilla,runs/study-hessian=hessian --output=results/generalization.json

For each task it takes the metrics at the last step of every optimizer. Hand-designed
optimizers of one family (``adam:lr=...``) are reduced to the one with the lowest mean final
*training* loss, or with ``--tune_on=validation_accuracy`` the highest accuracy on a split held
out of the training data (evaluate with ``--task_kwargs=validation_examples=N``): the baseline
is never tuned on test accuracy.

Several specs may share a label: they are one arm's meta-training seeds.  With
``--baseline=LABEL`` every other arm gets its paired difference in test accuracy against the
baseline arm and against the tuned hand-designed optimizer (same evaluation seeds; meta-seed
``i`` with meta-seed ``i``), with a standard error over meta-seeds that also carries the
evaluation-seed noise, so that an effect is told from noise (``significant``: beyond 2 SE).

``--stop_on=validation_accuracy`` reads each run (a meta-seed, a hand-designed spec) at the step of
its evaluation's ``--report_at`` list with the highest mean validation accuracy instead of the
last: a validation-chosen stopping step, so every optimizer gets the early stopping that choosing
Adam's rate on validation accuracy already buys it (its rate and step are then chosen together).

``--tune_step_scale`` gives the learned optimizers the same tuning: the runs of a labelled spec at several step
scales (``SPEC:lr=0.25``, its updates times 0.25; ``SPEC`` itself is scale 1) are one grid, and each meta-seed is
read at the scale ``--tune_on`` picks, as Adam is read at its rate.
"""

import collections
import glob
import json
import os

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import numpy as np
from absl import flags

from l2o_tf.spec import split_step_scale

FLAGS = flags.FLAGS
flags.DEFINE_list("inputs", None, "train.evaluate JSON files (globs allowed, each expanded in sorted order), read in the "
                  "order given: an arm's meta-seeds are paired with the baseline's in that order.")
flags.DEFINE_list("labels", [], "spec=label pairs naming the optimizers in the table.")
flags.DEFINE_string("output", None, "Summary JSON path; the PNG goes beside it.")
flags.DEFINE_enum("tune_on", "train_loss", ["train_loss", "validation_accuracy"],
                  "What picks a hand-designed optimizer's learning rate (never test accuracy).")
flags.DEFINE_enum("stop_on", None, ["validation_accuracy"],
                  "Read each run at its reported step (--report_at) with the best mean of this, not the last.")
flags.DEFINE_boolean("tune_step_scale", False,
                     "Choose each labelled learned optimizer's step scale (SPEC:lr=X runs) on --tune_on, as Adam's rate.")
flags.DEFINE_string("baseline", None, "Label of the arm the others are paired against (e.g. vanilla).")

METRICS = ("test_accuracy", "generalization_gap", "hessian_top_eigenvalue", "hessian_trace", "adaptive_trace",
           "validation_accuracy", "train_loss")


def _pooled(rows):
    """One arm's row from its meta-seeds' rows: means and stds over all (meta-seed, evaluation seed) values."""
    if len(rows) == 1:
        return rows[0]
    out = {"spec": [r["spec"] for r in rows], "seeds": rows[0]["seeds"], "meta_seeds": len(rows),
           "step": [r["step"] for r in rows]}
    for metric in METRICS:
        if all(metric in r and "values" in r[metric] for r in rows):
            values = np.concatenate([r[metric]["values"] for r in rows])
            out[metric] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
    return out


def _tuned(rows, tune_on):
    """The hand-designed run with the best training loss or validation accuracy."""
    if tune_on == "train_loss":
        return min(rows, key=lambda r: r["train_loss"]["mean"])
    if not all("validation_accuracy" in r for r in rows):
        raise ValueError("--tune_on=validation_accuracy: an input has no validation accuracy; evaluate with "
                         "--task_kwargs=validation_examples=N.")
    return max(rows, key=lambda r: r["validation_accuracy"]["mean"])


def _read_step(outcome, steps, stop_on):
    """The reported step a run is read at: the last, or the one with the best mean ``stop_on`` (ties: the later)."""
    if stop_on is None:
        return str(steps)
    at = outcome["at_step"]
    if not all(stop_on in metrics for metrics in at.values()):
        raise ValueError(f"--stop_on={stop_on}: an input has no {stop_on}; evaluate with "
                         "--task_kwargs=validation_examples=N.")
    return max(at, key=lambda step: (at[step][stop_on]["mean"], int(step)))


def summarise(paths, labels, tune_on="train_loss", stop_on=None, tune_step_scale=False):
    """``{task: {label: {metric: {"mean", "std"[, "values"]}, "spec": ...}}}``, the commands that produced the inputs,
    and ``{task: {label: [per-meta-seed rows]}}`` for pairing.  Every row records the ``step`` it was read at (and
    its ``spec``, which names the chosen step scale)."""
    table, runs, commands = collections.defaultdict(dict), collections.defaultdict(dict), []
    # task -> (column, grid) -> its runs in input order, read at the one --tune_on picks: a hand-designed family's
    # learning rates (grids may span inputs), a labelled learned spec's step scales (with --tune_step_scale)
    grids = collections.defaultdict(dict)
    seen = collections.defaultdict(set)  # task -> specs read: a run given twice would count twice
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        commands.append(result["command"])
        task = result["task"]
        for spec, outcome in result["optimizers"].items():
            if spec in seen[task]:
                raise ValueError(f"--inputs: {spec!r} on {task} is in two inputs; give each run once.")
            seen[task].add(spec)
            step = _read_step(outcome, result["steps"], stop_on)
            metrics = outcome["at_step"][step]
            row = {m: {k: metrics[m][k] for k in ("mean", "std", "values") if k in metrics[m]}
                   for m in METRICS if m in metrics}
            row.update(spec=spec, step=int(step), seeds=outcome["seeds"] if isinstance(outcome["seeds"], int) else len(outcome["seeds"]))
            base, scale = split_step_scale(spec)
            if base in labels and (tune_step_scale or scale is not None):
                if not tune_step_scale:
                    raise ValueError(f"{spec!r} is {base!r} at a step scale: pass --tune_step_scale to choose each "
                                     "meta-seed's scale on --tune_on.")
                column, grid = labels[base], base
            elif spec in labels:
                runs[task].setdefault(labels[spec], []).append(row)
                continue
            else:
                grid = spec.split(":")[0]
                column = f"{grid} (best lr)"
            grids[task].setdefault((column, grid), []).append(row)
            runs[task].setdefault(column, [])  # the column's place in the table: where it first appears
    for task, task_grids in grids.items():
        for (column, _), rows in task_grids.items():
            runs[task][column].append(_tuned(rows, tune_on))
    for task, arms in runs.items():
        for label, rows in arms.items():
            table[task][label] = _pooled(rows)
    return dict(table), commands, dict(runs)


def paired_difference(arm_rows, base_rows, metric="test_accuracy"):
    """Mean of ``arm - base`` over meta-seeds x evaluation seeds and its standard error.

    Meta-seed ``i`` of the arm is paired with meta-seed ``i`` of the base (a side with one run,
    such as tuned Adam or a shipped optimizer, with every meta-seed of the other), evaluation
    seed ``j`` with ``j``.  The SE
    is that of the per-meta-seed mean differences (it holds both the meta-training and the
    evaluation noise); with one meta-seed, that of the evaluation seeds alone.
    """
    def values(rows):
        if not all(metric in r and "values" in r[metric] for r in rows):
            raise ValueError(f"pairing needs per-seed values of {metric} (train.evaluate writes them).")
        return np.array([r[metric]["values"] for r in rows], dtype=float)

    arm, base = values(arm_rows), values(base_rows)
    if arm.shape[1] != base.shape[1]:
        raise ValueError(f"pairing needs the same evaluation seeds, got {arm.shape[1]} and {base.shape[1]}.")
    if len(base) == 1:
        base = np.repeat(base, len(arm), axis=0)
    if len(arm) == 1:
        arm = np.repeat(arm, len(base), axis=0)
    n = min(len(arm), len(base))
    diff = arm[:n] - base[:n]
    per_meta_seed = diff.mean(axis=1)
    if n >= 2:
        se = per_meta_seed.std(ddof=1) / np.sqrt(n)
    else:
        se = diff[0].std(ddof=1) / np.sqrt(diff.shape[1]) if diff.shape[1] > 1 else float("nan")
    mean = float(diff.mean())
    return {"mean": mean, "se": float(se), "meta_seeds": n, "evaluation_seeds": int(diff.shape[1]),
            "significant": bool(abs(mean) > 2 * se)}


def paired(runs, baseline):
    """``{task: {arm: {"vs <baseline>": ..., "vs <tuned>": ...}}}`` in test accuracy."""
    out = {}
    for task, arms in runs.items():
        if baseline not in arms:
            raise ValueError(f"--baseline={baseline!r} has no run on {task}; arms there: {', '.join(arms)}.")
        tuned = [label for label in arms if label.endswith("(best lr)")]
        out[task] = {label: {f"vs {other}": paired_difference(rows, arms[other]) for other in [baseline] + tuned}
                     for label, rows in arms.items() if label != baseline and label not in tuned}
    return out


def markdown(table, show_step=False):
    methods = list(dict.fromkeys(m for rows in table.values() for m in rows))
    lines = ["| task | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for task, rows in table.items():
        cells = []
        for method in methods:
            row = rows.get(method)
            if row is None:
                cells.append("")
                continue
            acc, gap = row["test_accuracy"], row["generalization_gap"]
            cell = f"{100 * acc['mean']:.2f}±{100 * acc['std']:.2f}% / gap {gap['mean']:.3f}"
            if "hessian_top_eigenvalue" in row:
                cell += f" / λmax {row['hessian_top_eigenvalue']['mean']:.2f} / tr {row['hessian_trace']['mean']:.1f}"
            if show_step:
                cell += " @ step " + "/".join(str(s) for s in np.atleast_1d(row["step"]))
            cells.append(cell)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tasks = list(table)
    methods = list(dict.fromkeys(m for rows in table.values() for m in rows))
    panels = [m for m in ("test_accuracy", "generalization_gap", "hessian_top_eigenvalue") if
              any(m in row for rows in table.values() for row in rows.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    width = 0.8 / len(methods)
    for ax, metric in zip(np.atleast_1d(axes), panels):
        for j, method in enumerate(methods):
            rows = [table[t].get(method, {}).get(metric, {"mean": np.nan, "std": 0.0}) for t in tasks]
            ax.bar(np.arange(len(tasks)) + j * width, [r["mean"] for r in rows], width,
                   yerr=[r["std"] for r in rows], label=method, capsize=2)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
        ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric)
        if metric == "test_accuracy":
            finite = [table[t][m][metric]["mean"] for t in tasks for m in table[t] if metric in table[t][m]]
            ax.set_ylim(min(finite) - 0.05, min(1.0, max(finite) + 0.02))
        if metric == "hessian_top_eigenvalue":
            ax.set_yscale("log")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    # The order given, not sorted: a meta-seed's RUN/best file (NAME_best_...) sorts before the others' files, and
    # pairing by position would then pair it with another meta-seed's baseline.
    paths = list(dict.fromkeys(p for pattern in FLAGS.inputs for p in (sorted(glob.glob(pattern)) or [pattern])))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"--inputs: no such file {missing[0]!r}.")
    cli.check_writable(FLAGS.output)
    labels = {k: str(v) for k, v in cli.parse_kwargs(FLAGS.labels, "labels").items()}
    table, commands, runs = summarise(paths, labels, FLAGS.tune_on, FLAGS.stop_on, FLAGS.tune_step_scale)
    text = markdown(table, show_step=FLAGS.stop_on is not None)
    out = {"table": table, "commands": commands, "tuned_on": FLAGS.tune_on, "stopped_on": FLAGS.stop_on,
           "step_scale_tuned": FLAGS.tune_step_scale, "markdown": text}
    if FLAGS.baseline:
        out["paired_test_accuracy"] = paired(runs, FLAGS.baseline)
        lines = [f"{task} {arm} {vs}: {100 * d['mean']:+.2f} ± {100 * d['se']:.2f} points"
                 + (" (beyond 2 SE)" if d["significant"] else "")
                 for task, arms in out["paired_test_accuracy"].items() for arm, rows in arms.items()
                 for vs, d in rows.items()]
        text += "\n\nPaired test-accuracy differences (SE over meta-seeds x evaluation seeds):\n" + "\n".join(lines)
    with open(FLAGS.output, "w") as f:
        json.dump(out, f, indent=1)
    plot(table, os.path.splitext(FLAGS.output)[0] + ".png")
    print(text)


def run():
    cli.run(main, required=("inputs", "output"))


if __name__ == "__main__":
    run()
