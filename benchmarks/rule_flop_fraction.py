"""FLOPs of one rule step, counted from its layer shapes, per second, over the matmul bound."""

import tensorflow as tf

from benchmarks import matmul_gflops
from benchmarks.timing import emit, median_seconds
from l2o_tf import rules


def flops_per_coordinate(rule):
    """Multiply-adds x 2 of the rule's dense layers for one coordinate (elementwise work not counted)."""
    total = 0
    for weight in rule.trainable_weights:
        if len(weight.shape) == 2:
            total += 2 * int(weight.shape[0]) * int(weight.shape[1])
    return total


def measure(num_coordinates=1_000_000, bound_gflops=None):
    bound_gflops = bound_gflops or matmul_gflops.measure()["gflops"]
    out = {"num_coordinates": num_coordinates, "matmul_gflops": bound_gflops}
    for name, rule in (("rnnprop", rules.RNNprop()), ("dmlstm", rules.DMLSTM())):
        for jit in (False, True):  # XLA fuses the LSTM's elementwise gate work
            grads = tf.random.stateless_normal([num_coordinates], [1, 2])
            state = rule.initial_state(num_coordinates)
            step = tf.function(lambda g, s, rule=rule: rule(g, g, s, tf.constant(3, tf.int64)), jit_compile=jit)
            seconds = median_seconds(lambda: [t.numpy() for t in step(grads, state)], repeats=5, warmup=2)
            gflops = flops_per_coordinate(rule) * num_coordinates / seconds / 1e9
            out[name + ("_xla" if jit else "")] = {
                "seconds": seconds, "flops_per_coordinate": flops_per_coordinate(rule),
                "gflops": gflops, "fraction_of_matmul": gflops / bound_gflops}
    return out


if __name__ == "__main__":
    emit("rule_flop_fraction", measure())
