r"""Export an optimizer as a SavedModel that plain TensorFlow can load.

    python -m export.export_saved_model --optimizer=rnnprop-mnist --output=exports/rnnprop-mnist

--optimizer: a shipped name (l2o_tf.pretrained.names()) or a meta-training out_dir.  Then
`saved_model_cli show --dir DIR --all` lists the init_state and step signatures.
"""

import os

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

from absl import flags

from l2o_tf import pretrained
from l2o_tf.export import export_saved_model

FLAGS = flags.FLAGS
flags.DEFINE_string("optimizer", None, "Shipped optimizer name or meta-training out_dir.")
flags.DEFINE_string("output", None, "Directory to write the SavedModel to (must not exist or be empty).")


def main(argv):
    if os.path.exists(FLAGS.output) and os.listdir(FLAGS.output):
        raise ValueError(f"--output {FLAGS.output!r} exists and is not empty; choose a new directory.")
    parent = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(parent, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--output {FLAGS.output!r}: {parent!r} is not writable.")
    rule = pretrained.load_rule(FLAGS.optimizer)
    export_saved_model(rule, FLAGS.output)
    print(f"exported {FLAGS.optimizer} ({type(rule).__name__}, state width {rule.state_size}) to {FLAGS.output}")


def run():
    cli.run(main, required=("optimizer", "output"))


if __name__ == "__main__":
    run()
