"""FLOPs of one rule step, counted from its layer shapes, per second, over the matmul bound.

Four implementations: TF kernels, XLA, the native kernels as ``LearnedOptimizer(native_kernel=True)``
applies them (``_native``: RNNprop's whole step in one kernel), and the differentiable native LSTM-stack
kernel with the rest in TF, as meta-training runs it (``_native_stack``; l2o_tf/kernels).  It also measures why the TF/XLA
fractions stay low on a CPU: the rule's elementwise activations (not counted as FLOPs) each
take a pass over ``[coordinates, ...]``.  ``activation_bound`` times one XLA ``tanh`` over all of
a step's activations and gives the fraction that any implementation built from TF/XLA kernels
could at most reach: matmul FLOPs at the bound plus the activations at that measured rate.
The native kernel computes the activations in registers, so that bound does not hold for it.
"""

import tensorflow as tf

from benchmarks import matmul_gflops
from benchmarks.timing import emit, finish, median_seconds
from l2o_tf import kernels, rules


def flops_per_coordinate(rule):
    """Multiply-adds x 2 of the rule's dense layers for one coordinate (elementwise work not counted)."""
    total = 0
    for weight in rule.trainable_weights:
        if len(weight.shape) == 2:
            total += 2 * int(weight.shape[0]) * int(weight.shape[1])
    return total


def activations_per_coordinate(rule):
    """Transcendental activations of one coordinate's step: per LSTM layer 4H gates + tanh(c),
    plus RNNprop's ELU embedding and its output tanh/exp, plus DM-LSTM's log preprocessing."""
    lstm = rule.lstm
    count = 5 * lstm.hidden_size * lstm.num_layers
    if isinstance(rule, rules.RNNprop):
        return count + lstm.hidden_size + 1
    return count + 1


def activation_seconds(num_coordinates, activations):
    """Time of one XLA tanh over ``[num_coordinates, activations]``: the activations' pass at this machine's rate."""
    x = tf.random.stateless_normal([num_coordinates, activations], [3, 4])
    tanh = tf.function(tf.tanh, jit_compile=True)
    return median_seconds(lambda: finish(tanh(x)), repeats=5, warmup=2)


def measure(num_coordinates=1_000_000, bound_gflops=None):
    bound_gflops = bound_gflops or matmul_gflops.measure()["gflops"]
    out = {"num_coordinates": num_coordinates, "matmul_gflops": bound_gflops}
    for name, rule in (("rnnprop", rules.RNNprop()), ("dmlstm", rules.DMLSTM())):
        # TF kernels; XLA, which fuses the LSTM's elementwise gate work; l2o_tf's native kernels.
        for variant in ("", "_xla", "_native", "_native_stack"):
            grads = tf.random.stateless_normal([num_coordinates], [1, 2])
            state = rule.initial_state(num_coordinates)

            def apply(g, s, rule=rule, variant=variant):
                with kernels.native(variant.startswith("_native"), whole_rule=variant == "_native"):
                    return rule(g, g, s, tf.constant(3, tf.int64))

            step = tf.function(apply, jit_compile=variant == "_xla")
            seconds = median_seconds(lambda: finish(step(grads, state)), repeats=5, warmup=2)
            gflops = flops_per_coordinate(rule) * num_coordinates / seconds / 1e9
            out[name + variant] = {
                "seconds": seconds, "flops_per_coordinate": flops_per_coordinate(rule),
                "gflops": gflops, "fraction_of_matmul": gflops / bound_gflops}
        matmul_s = flops_per_coordinate(rule) * num_coordinates / (bound_gflops * 1e9)
        activations = activations_per_coordinate(rule)
        act_s = activation_seconds(num_coordinates, activations)
        out[name + "_activation_bound"] = {
            "activations_per_coordinate": activations, "activation_seconds": act_s,
            "matmul_seconds_at_bound": matmul_s, "max_fraction_of_matmul": matmul_s / (matmul_s + act_s)}
    return out


if __name__ == "__main__":
    emit("rule_flop_fraction", measure())
