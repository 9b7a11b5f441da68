"""The machine's float32 matmul rate: the bound the rule's FLOPs are compared with."""

import tensorflow as tf

from benchmarks.timing import emit, wall_times


def measure(n=2048):
    a = tf.random.stateless_normal([n, n], [0, 1])
    b = tf.random.stateless_normal([n, n], [0, 2])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    # The fastest run, not the median: the bound is what the machine can do, and on a shared
    # machine a neighbour's burst can halve a median of a few 0.05 s runs.
    seconds = min(wall_times(lambda: matmul().numpy(), repeats=15, warmup=2))
    return {"n": n, "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


if __name__ == "__main__":
    emit("matmul_gflops", measure())
