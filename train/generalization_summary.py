r"""Summarise a generalization study from train.evaluate result files: a JSON table, a PNG, a Markdown table.

    python -m train.generalization_summary --inputs=results/generalization/*.json \
        --labels=runs/study-vanilla=vanilla,runs/study-hessian=hessian --output=results/generalization.json

For each task it takes the metrics at the last step of every optimizer. Hand-designed
optimizers of one family (``adam:lr=...``) are reduced to the one with the lowest mean final
*training* loss: the baseline is tuned on the training objective, never on test accuracy.
"""

import collections
import glob
import json
import os

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import numpy as np
from absl import flags


FLAGS = flags.FLAGS
flags.DEFINE_list("inputs", None, "train.evaluate JSON files (globs allowed).")
flags.DEFINE_list("labels", [], "spec=label pairs naming the optimizers in the table.")
flags.DEFINE_string("output", None, "Summary JSON path; the PNG goes beside it.")

METRICS = ("test_accuracy", "generalization_gap", "hessian_top_eigenvalue", "hessian_trace", "train_loss")


def summarise(paths, labels):
    """``{task: {label: {metric: {"mean", "std"}, "spec": ...}}}`` plus the commands that produced the inputs."""
    table, commands = collections.defaultdict(dict), []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        commands.append(result["command"])
        last = str(result["steps"])
        hand_designed = collections.defaultdict(list)
        for spec, outcome in result["optimizers"].items():
            metrics = outcome["at_step"][last]
            row = {m: {"mean": metrics[m]["mean"], "std": metrics[m]["std"]} for m in METRICS if m in metrics}
            row.update(spec=spec, seeds=len(outcome["seeds"]))
            if spec in labels:
                table[result["task"]][labels[spec]] = row
            else:
                hand_designed[spec.split(":")[0]].append(row)
        for family, rows in hand_designed.items():
            best = min(rows, key=lambda r: r["train_loss"]["mean"])
            table[result["task"]][f"{family} (best lr)"] = best
    return dict(table), commands


def markdown(table):
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
    paths = sorted({p for pattern in FLAGS.inputs for p in (glob.glob(pattern) or [pattern])})
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"--inputs: no such file {missing[0]!r}.")
    cli.check_writable(FLAGS.output)
    table, commands = summarise(paths, {k: str(v) for k, v in cli.parse_kwargs(FLAGS.labels, "labels").items()})
    text = markdown(table)
    with open(FLAGS.output, "w") as f:
        json.dump({"table": table, "commands": commands, "markdown": text}, f, indent=1)
    plot(table, os.path.splitext(FLAGS.output)[0] + ".png")
    print(text)


def run():
    cli.run(main, required=("inputs", "output"))


if __name__ == "__main__":
    run()
