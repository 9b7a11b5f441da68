"""Shared by the meta-training benchmarks: the wall time of ``MetaTrainer`` meta steps and their peak memory."""

import tempfile
import time

import tensorflow as tf

from l2o_tf.meta import MetaTrainConfig, MetaTrainer


def time_meta_steps(steps=10, warmup=2, jit_compile=False, **config):
    """Seconds per meta step of ``MetaTrainer.train`` (bookkeeping included), after ``warmup`` traced steps.

    Also returns the peak CPU allocator memory of the timed steps over what
    was allocated before them (bytes), from ``tf.config.experimental.get_memory_info``.
    """
    defaults = dict(task="mnist_mlp", rule="rnnprop", unroll=20, curriculum=(200,), validate_every=10**6,
                    checkpoint_every=10**6, seed=0)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = MetaTrainer(MetaTrainConfig(**{**defaults, **config, "meta_steps": warmup, "jit_compile": jit_compile}),
                              out_dir)
        trainer.train(verbose=0)
        trainer.config.meta_steps = warmup + steps
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        start = time.perf_counter()
        trainer.train(verbose=0)
        seconds = (time.perf_counter() - start) / steps
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    return seconds, peak


def warm_up():
    """Build and run one throwaway trainer: the process's first one pays one-off costs (thread pools,
    allocator growth) that would otherwise land on whichever configuration is timed first."""
    time_meta_steps(steps=2)
