"""Shared by the meta-training benchmarks: the wall time of ``MetaTrainer`` meta steps and their peak memory.

``python -m benchmarks.meta_step RULE [xla|native]`` serves one warmed-up timer to another process: it
prints ``ready``, then for each line ``N`` on stdin the seconds per step of ``N`` more meta steps
(pytorch_l2l times l2o_tf in turns with PyTorch this way, each library in its own process).
"""

import sys
import tempfile
import time

from benchmarks.timing import PeakMemory
from l2o_tf.meta import MetaTrainConfig, MetaTrainer


class MetaStepTimer:
    """A ``MetaTrainer`` traced and warmed up once, whose further meta steps are timed on request.

    Several timers can be timed in turns (A B A B ...), so that a shared machine's drift
    falls on every configuration alike and cancels in their ratios.
    """

    DEFAULTS = dict(task="mnist_mlp", rule="rnnprop", unroll=20, curriculum=(200,), validate_every=10**6,
                    checkpoint_every=10**6, seed=0)

    def __init__(self, warmup=2, jit_compile=False, **config):
        self._out_dir = tempfile.TemporaryDirectory()
        self.trainer = MetaTrainer(
            MetaTrainConfig.from_flat(**{**self.DEFAULTS, **config, "meta_steps": warmup, "jit_compile": jit_compile}),
            self._out_dir.name)
        self.trainer.train(verbose=0)

    def seconds_per_step(self, steps):
        """Wall seconds per meta step of ``MetaTrainer.train`` (bookkeeping included) over ``steps`` more steps."""
        self.trainer.config.meta_steps += steps
        start = time.perf_counter()
        self.trainer.train(verbose=0)
        return (time.perf_counter() - start) / steps

    def close(self):
        self._out_dir.cleanup()


def time_meta_steps(steps=10, warmup=2, jit_compile=False, **config):
    """Seconds per meta step after ``warmup`` traced steps, and the peak CPU allocator memory of the
    timed steps over what was in use before them (bytes, :class:`benchmarks.timing.PeakMemory`)."""
    timer = MetaStepTimer(warmup, jit_compile, **config)
    try:
        with PeakMemory() as memory:
            seconds = timer.seconds_per_step(steps)
    finally:
        timer.close()
    return seconds, memory.bytes


def time_in_turns(timers, rounds, steps):
    """``{name: [seconds per step of each round]}`` for ``{name: MetaStepTimer}`` timed in turns (A B A B ...),
    ``steps`` meta steps each per round; the timers are closed afterwards."""
    seconds = {name: [] for name in timers}
    try:
        for _ in range(rounds):
            for name, timer in timers.items():
                seconds[name].append(timer.seconds_per_step(steps))
    finally:
        for timer in timers.values():
            timer.close()
    return seconds


def warm_up():
    """Build and run one throwaway trainer: the process's first one pays one-off costs (thread pools,
    allocator growth) that would otherwise land on whichever configuration is timed first."""
    time_meta_steps(steps=2)


VARIANTS = {"": {}, "xla": {"jit_compile": True}, "native": {"native_kernel": True}}


def serve(rule, variant):
    timer = MetaStepTimer(rule=rule, **VARIANTS[variant])
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            print(timer.seconds_per_step(int(line)), flush=True)
    finally:
        timer.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
