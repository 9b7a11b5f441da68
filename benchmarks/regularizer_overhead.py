"""Meta-step time of mnist_mlp RNNprop meta-training with each flatness penalty, over vanilla (timed in turns)."""

import statistics

from benchmarks.meta_step import MetaStepTimer, time_in_turns, warm_up
from benchmarks.timing import emit

PENALTIES = {
    "hessian_trace_1_probe": dict(regularizer="hessian_trace", reg_num_probes=1),
    "hessian_eig_10_iters": dict(regularizer="hessian_eig", reg_num_iters=10),
    "local_entropy_10_sgld": dict(regularizer="local_entropy", reg_sgld_steps=10),
    "local_entropy_10_sgld_every_5": dict(regularizer="local_entropy", reg_sgld_steps=10, reg_every=5),
}


def measure(rounds=3, steps=10):
    """Each penalty's meta-step time over vanilla: the median over ``rounds`` of ratios taken within a
    round, in which every configuration is timed for ``steps`` steps in turn."""
    warm_up()
    timers = {"vanilla": MetaStepTimer()}
    timers.update({name: MetaStepTimer(**config) for name, config in PENALTIES.items()})
    times = time_in_turns(timers, rounds, steps)
    result = {"task": "mnist_mlp", "rule": "rnnprop", "unroll": 20, "rounds": rounds, "steps_per_round": steps,
              "vanilla_s": statistics.median(times["vanilla"])}
    for name in PENALTIES:
        result[f"{name}_s"] = statistics.median(times[name])
        result[f"{name}_ratio"] = statistics.median(t / v for t, v in zip(times[name], times["vanilla"]))
    return result


if __name__ == "__main__":
    emit("regularizer_overhead", measure())
