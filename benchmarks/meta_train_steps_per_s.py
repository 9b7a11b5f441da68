"""Optimizee steps per second of mnist_mlp meta-training (unroll 20, batch 128): TF kernels, XLA, and
l2o_tf's native kernels; and the peak memory of one meta step for unroll lengths 20, 50, 100 (and 100
with --recompute, and with the native kernels, whose backward op recomputes the gates)."""

import sys

from benchmarks.meta_step import VARIANTS, time_meta_steps, warm_up
from benchmarks.timing import emit


def measure(rules=("rnnprop", "dmlstm"), unrolls=(20, 50, 100)):
    result = {"task": "mnist_mlp", "batch_size": 128}
    warm_up()
    for rule in rules:
        for variant, options in VARIANTS.items():
            seconds, _ = time_meta_steps(rule=rule, unroll=20, steps=30, **options)
            result[f"{rule}{'_' * bool(variant)}{variant}_optimizee_steps_per_s"] = 20 / seconds
        for unroll in unrolls:
            _, peak = time_meta_steps(rule=rule, unroll=unroll, steps=2, warmup=1, curriculum=(unroll * 2,))
            result[f"{rule}_unroll{unroll}_peak_mb"] = peak / 2**20
        seconds, peak = time_meta_steps(rule=rule, unroll=unrolls[-1], steps=2, warmup=1, curriculum=(unrolls[-1] * 2,),
                                        recompute=True)
        result[f"{rule}_unroll{unrolls[-1]}_recompute_peak_mb"] = peak / 2**20
        _, peak = time_meta_steps(rule=rule, unroll=unrolls[-1], steps=2, warmup=1, curriculum=(unrolls[-1] * 2,),
                                  native_kernel=True)
        result[f"{rule}_unroll{unrolls[-1]}_native_peak_mb"] = peak / 2**20
    return result


if __name__ == "__main__":
    emit("meta_train_steps_per_s", measure(*([sys.argv[1].split(",")] if len(sys.argv) > 1 else [])))
