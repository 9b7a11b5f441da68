"""Optimizee steps per second of meta-training under each gradient estimator (AdafacMLP on mnist_mlp,
unroll 20, batch 128, 2 optimizees: one antithetic pair for ES/PES), and each estimator's peak memory.

ES and PES run forward passes only (no tape through the unroll); truncated backprop and MAML differentiate
it (MAML: twice, one inner step).  Steps/s counts the optimizee steps of all optimizees of a meta step.
"""

import sys

from benchmarks.meta_step import time_meta_steps, warm_up
from benchmarks.timing import emit

ESTIMATORS = ("truncated", "pes", "es", "maml")


def measure(estimators=ESTIMATORS, rule="adafac_mlp", unroll=20, optimizees=2):
    result = {"task": "mnist_mlp", "batch_size": 128, "rule": rule, "unroll": unroll, "optimizees": optimizees}
    warm_up()
    for estimator in estimators:
        seconds, peak = time_meta_steps(rule=rule, unroll=unroll, steps=20, estimator=estimator, optimizees=optimizees)
        result[f"{estimator}_optimizee_steps_per_s"] = unroll * optimizees / seconds
        result[f"{estimator}_peak_mb"] = peak / 2**20
    return result


if __name__ == "__main__":
    emit("estimator_steps_per_s", measure(*([sys.argv[1].split(",")] if len(sys.argv) > 1 else [])))
