"""Meta-step time of mnist_mlp RNNprop meta-training with each flatness penalty, over vanilla."""

from benchmarks.meta_step import time_meta_steps, warm_up
from benchmarks.timing import emit

PENALTIES = {
    "hessian_trace_1_probe": dict(regularizer="hessian_trace", reg_num_probes=1),
    "hessian_eig_10_iters": dict(regularizer="hessian_eig", reg_num_iters=10),
    "local_entropy_10_sgld": dict(regularizer="local_entropy", reg_sgld_steps=10),
    "local_entropy_10_sgld_every_5": dict(regularizer="local_entropy", reg_sgld_steps=10, reg_every=5),
}


def measure(steps=30):
    warm_up()
    vanilla, _ = time_meta_steps(steps=steps)
    result = {"task": "mnist_mlp", "rule": "rnnprop", "unroll": 20, "vanilla_s": vanilla}
    for name, config in PENALTIES.items():
        seconds, _ = time_meta_steps(steps=steps, **config)
        result[f"{name}_s"] = seconds
        result[f"{name}_ratio"] = seconds / vanilla
    return result


if __name__ == "__main__":
    emit("regularizer_overhead", measure())
