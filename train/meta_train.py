r"""Meta-train a learned optimizer.

    l2o-meta-train --task=mnist_mlp --rule=rnnprop --unroll=20 --trajectory=100 \
        --meta_steps=2000 --meta_lr=1e-3 --seed=0 --out_dir=runs/rnnprop --checkpoint_every=100

(or ``python -m train.meta_train``).  Re-running the same command with the same --out_dir
resumes from its latest checkpoint.  The meta-training options are the fields of
``l2o_tf.meta.MetaTrainConfig``; each is a flag of the same name.

Distributed: --strategy=mirrored (local GPUs), multi_worker (cluster in TF_CONFIG; every
worker runs the same command, the chief writes to --out_dir and worker i to
--out_dir/worker-i), or tpu (--tpu=ADDRESS).  --optimizees is the global batch of
optimizees per meta step, shared by the replicas.
The trained optimizer is usable as ``l2o_tf.pretrained.load(out_dir)`` or
``--optimizer=OUT_DIR`` in ``train.evaluate``.
"""

import os

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import tensorflow as tf
from absl import flags

from l2o_tf.meta import strategies
from l2o_tf.meta.config import MetaTrainConfig
from l2o_tf.meta.trainer import MetaTrainer

FLAGS = flags.FLAGS
cli.define_config_flags(MetaTrainConfig, __name__)
flags.DEFINE_integer("trajectory", None, "Shorthand for a one-length --curriculum: optimizee steps before a fresh optimizee.")
flags.DEFINE_string("out_dir", None, "Directory for checkpoints, config.json, TensorBoard logs and the optimizer.")
flags.DEFINE_enum("strategy", "default", list(strategies.NAMES), "tf.distribute strategy for the meta step.")
flags.DEFINE_list("devices", [], "mirrored: the devices to mirror over, e.g. /gpu:0,/gpu:1 (default: all GPUs).")
flags.DEFINE_string("tpu", "", "tpu: the TPU address ('local' on a TPU VM).")
flags.DEFINE_boolean("deterministic", True, "Enable TF op determinism (exact resume).")


def main(argv):
    overrides = {}
    if FLAGS.trajectory is not None:
        if FLAGS["curriculum"].present:
            raise ValueError("pass --trajectory or --curriculum, not both (--trajectory=T is --curriculum=T).")
        overrides["curriculum"] = (FLAGS.trajectory,)
    config = cli.config_from_flags(MetaTrainConfig, **overrides)  # checked before TF starts any work
    strategy = strategies.make(FLAGS.strategy, FLAGS.devices, FLAGS.tpu)  # before any other TF op
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    out_dir = strategies.worker_out_dir(os.path.abspath(FLAGS.out_dir))
    trainer = MetaTrainer(config, out_dir, strategy=strategy)
    trainer.train(verbose=1 if strategies.worker_index() == 0 else 0)
    print(f"optimizer written to {os.path.join(out_dir, 'optimizer')}")


def run():
    cli.run(main, required=("out_dir",))


if __name__ == "__main__":
    run()
