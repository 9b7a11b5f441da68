r"""Ship a meta-training run as a named pretrained optimizer inside the package.

    python -m train.package_pretrained --out_dir=runs/rnnprop-mnist --name=rnnprop-mnist \
        --command="python -m train.meta_train ..."

Copies the run's rule into l2o_tf/pretrained/NAME with training.json: the run's config,
the exact command, the meta steps done and the wall time the log reports.  With
``--checkpoint=OUT_DIR/checkpoints/ckpt-N`` (or a copy kept elsewhere) it ships the rule
weights of that checkpoint instead of the run's latest: the one selected on validation;
``--rule_config=step_horizon=500`` changes a config option of the rule that adds no weights.
"""

import json
import os
import re

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import tensorflow as tf
from absl import flags

from l2o_tf import pretrained

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Meta-training out_dir.")
flags.DEFINE_string("name", None, "Name to ship it under.")
flags.DEFINE_string("command", None, "The exact meta_train command that produced the run.")
flags.DEFINE_string("log", None, "The run's log (for the wall time); default OUT_DIR.log.")
flags.DEFINE_string("checkpoint", None, "A checkpoint of the run (a prefix such as OUT_DIR/checkpoints/ckpt-2100) "
                    "whose rule weights to ship instead of the latest ones.")
cli.define_kwargs_flag("rule_config", "Rule config fields to change after loading the weights (an option chosen on "
                       "validation after meta-training, e.g. step_horizon=500).", module_name=__name__)
flags.DEFINE_string("note", None, "Free text recorded in training.json: how the checkpoint was selected, CPU time.")


def rule_at_checkpoint(rule, path):
    """``rule`` with the weights saved in the meta-training checkpoint ``path``, and that checkpoint's meta step.

    The trainer checkpoints its rule as ``tf.train.Checkpoint(rule_weights=[...], ...)``: reading the same
    name restores the weights alone (the optimizee and meta-optimizer state are left in the file)."""
    if not tf.io.gfile.exists(path + ".index"):
        raise ValueError(f"--checkpoint {path!r}: no such checkpoint (expected {path}.index).")
    meta_step = tf.Variable(0, dtype=tf.int64, trainable=False)
    tf.train.Checkpoint(rule_weights=list(rule.weights), meta_step=meta_step).read(
        path).expect_partial().assert_existing_objects_matched()
    return rule, int(meta_step)


def main(argv):
    changes = cli.parse_kwargs(FLAGS.rule_config, "rule_config")  # a malformed flag fails before any loading
    rule = pretrained.load_rule(FLAGS.out_dir)
    with open(os.path.join(FLAGS.out_dir, "config.json")) as f:
        config = json.load(f)
    log_path = FLAGS.log or FLAGS.out_dir.rstrip("/") + ".log"
    seconds = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            seconds = [float(s) for s in re.findall(r"Meta-trained \d+ steps in ([0-9.]+) s", f.read())]
    training = {"config": config, "command": FLAGS.command, "wall_seconds": sum(seconds) if seconds else None,
                "machine": "2 CPU cores (x86_64), no GPU"}
    if FLAGS.checkpoint:
        rule, training["meta_steps_done"] = rule_at_checkpoint(rule, FLAGS.checkpoint)
    if changes:
        rule = pretrained.with_config(rule, **changes)
        training["rule_config_changes"] = changes
    if FLAGS.note:
        training["note"] = FLAGS.note
    pretrained.save_rule(rule, os.path.join(pretrained.HERE, FLAGS.name), training=training)
    print(f"shipped {FLAGS.name} -> {os.path.join(pretrained.HERE, FLAGS.name)}")


def run():
    cli.run(main, required=("out_dir", "name", "command"))


if __name__ == "__main__":
    run()
