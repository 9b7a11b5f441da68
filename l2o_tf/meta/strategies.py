"""Which ``tf.distribute`` strategy meta-trains, and where each worker writes.

Meta-training is data parallel over optimizees: every replica unrolls its
share of the global batch of optimizees and the meta-gradients are all-reduced
by the strategy (see :class:`l2o_tf.meta.trainer.MetaTrainer`).  This module
only builds the strategy from a name; the engine is tf.distribute's own.

- ``default``: no distribution (one device).
- ``mirrored``: all local GPUs (or the CPU), or the ``devices`` given.
- ``multi_worker``: ``MultiWorkerMirroredStrategy``, cluster from ``TF_CONFIG``.
- ``tpu``: ``TPUStrategy`` on the TPU named by ``tpu`` (``"local"`` on a TPU VM).
"""

import json
import os

import tensorflow as tf

NAMES = ("default", "mirrored", "multi_worker", "tpu")


def make(name="default", devices=None, tpu=""):
    """The strategy called ``name``.  Create it before any other TensorFlow op runs."""
    if name not in NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(NAMES)}.")
    if devices and name != "mirrored":
        raise ValueError(f"devices={devices!r} only applies to the mirrored strategy, not {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs the cluster in the TF_CONFIG environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        raise ValueError(f"strategy 'tpu' found no TPU at {tpu or 'the default address'!r}: {str(e).splitlines()[0]}") from None
    return tf.distribute.TPUStrategy(resolver)


def worker_index():
    """This process's index among the workers of ``TF_CONFIG`` (0 without one)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    # The chief, when the cluster names one, comes first; workers follow it.
    offset = 1 if "chief" in cluster else 0
    if task.get("type") == "chief":
        return 0
    return offset + int(task.get("index", 0))


def worker_out_dir(out_dir):
    """Where this worker keeps its copy of the run: ``out_dir`` on the chief, a subfolder elsewhere.

    Every worker must save checkpoints (they are collective in tf.distribute),
    and every worker holds the whole state, so each keeps its own resumable copy.
    """
    index = worker_index()
    return out_dir if index == 0 else os.path.join(out_dir, f"worker-{index}")
