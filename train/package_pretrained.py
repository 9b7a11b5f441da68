r"""Ship a meta-training run as a named pretrained optimizer inside the package.

    python -m train.package_pretrained --out_dir=runs/rnnprop-mnist --name=rnnprop-mnist \
        --command="python -m train.meta_train ..."

Copies the run's rule into l2o_tf/pretrained/NAME with training.json: the run's config,
the exact command, the meta steps done and the wall time the log reports.
"""

import json
import os
import re

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

from absl import flags

from l2o_tf import pretrained

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Meta-training out_dir.")
flags.DEFINE_string("name", None, "Name to ship it under.")
flags.DEFINE_string("command", None, "The exact meta_train command that produced the run.")
flags.DEFINE_string("log", None, "The run's log (for the wall time); default OUT_DIR.log.")


def main(argv):
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
    pretrained.save_rule(rule, os.path.join(pretrained.HERE, FLAGS.name), training=training)
    print(f"shipped {FLAGS.name} -> {os.path.join(pretrained.HERE, FLAGS.name)}")


def run():
    cli.run(main, required=("out_dir", "name", "command"))


if __name__ == "__main__":
    run()
