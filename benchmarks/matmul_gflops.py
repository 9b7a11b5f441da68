"""The machine's float32 matmul rate: the bound the rule's FLOPs are compared with."""

import tensorflow as tf

from benchmarks.timing import emit, median_seconds


def measure(n=2048):
    a = tf.random.stateless_normal([n, n], [0, 1])
    b = tf.random.stateless_normal([n, n], [0, 2])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = median_seconds(lambda: matmul().numpy(), repeats=7, warmup=2)
    return {"n": n, "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


if __name__ == "__main__":
    emit("matmul_gflops", measure())
