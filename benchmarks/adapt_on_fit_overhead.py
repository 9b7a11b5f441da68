"""What AdaptOnFit's adaptation and fit-length guard cost beside the fit they adapt: wall seconds of the
adaptation (weights' steps plus every candidate's held-out trajectories) and of the 1,000 fit steps, on
suite tasks: ``python -m benchmarks.adapt_on_fit_overhead [task,task]`` (default: an MLP, a conv net with
BatchNorm and the LSTM language model)."""

import sys
import time

from benchmarks.timing import emit
from l2o_tf import pretrained, suite
from l2o_tf.callbacks import AdaptOnFit
from l2o_tf.meta.adaptation import copy_rule
from l2o_tf.optimizer import LearnedOptimizer

STEPS = 1000


def measure(names=("mlp_mnist_40x2_elu", "conv_bn_cifar16_gap", "lstm_lm_48_len40")):
    rule = pretrained.load_rule("general")
    out = {"optimizer": "general", "fit_steps": STEPS}
    for name in names:
        task = suite.get(name)
        data = task.data_fn()
        adapter = AdaptOnFit(data.x_train, data.y_train, batch_size=task.batch_size)
        start = time.perf_counter()
        suite.fit_run(task, lambda: LearnedOptimizer(copy_rule(rule)), 0, STEPS, callbacks=(adapter,), data=data,
                      test_examples=1000)
        total = time.perf_counter() - start
        (decision,) = adapter.decisions
        out[name] = {"adaptation_s": decision["seconds"], "fit_and_evaluation_s": total - decision["seconds"],
                     "check_steps": decision["check_steps"], "candidates": len(decision["scores"]),
                     "choice": decision["choice"]}
    return out


if __name__ == "__main__":
    emit("adapt_on_fit_overhead", measure(*([sys.argv[1].split(",")] if len(sys.argv) > 1 else [])))
