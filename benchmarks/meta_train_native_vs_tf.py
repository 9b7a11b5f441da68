"""Meta-training optimizee steps/s, TF kernels vs the native LSTM-stack kernel, timed in turns (A B A B).

What ``--native_kernel=auto`` decides from: ``python -m benchmarks.meta_train_native_vs_tf [rules]``.
To see what an AVX2-only CPU runs on an AVX-512 machine, build the kernels for AVX2 and cap oneDNN
at AVX2: ``L2O_KERNEL_MARCH=haswell ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.meta_train_native_vs_tf``.
"""

import os
import statistics
import sys

from benchmarks.meta_step import MetaStepTimer, time_in_turns, warm_up
from benchmarks.timing import emit

UNROLL = 20


def measure(rules=("dmlstm", "rnnprop"), rounds=5, steps=10):
    result = {"task": "mnist_mlp", "unroll": UNROLL, "batch_size": 128,
              "kernel_march": os.environ.get("L2O_KERNEL_MARCH") or "native",
              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
              "intra_op_threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "all cores")}
    warm_up()
    for rule in rules:
        timers = {"tf": MetaStepTimer(rule=rule, unroll=UNROLL), "native": MetaStepTimer(rule=rule, unroll=UNROLL,
                                                                                          native_kernel=True)}
        seconds = time_in_turns(timers, rounds, steps)
        for name, values in seconds.items():
            result[f"{rule}_{name}_optimizee_steps_per_s"] = UNROLL / statistics.median(values)
        result[f"{rule}_native_speedup"] = statistics.median(seconds["tf"]) / statistics.median(seconds["native"])
    return result


if __name__ == "__main__":
    emit("meta_train_native_vs_tf", measure(*([sys.argv[1].split(",")] if len(sys.argv) > 1 else [])))
