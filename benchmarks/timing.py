"""Shared timing helper: warm up, then the median of repeated runs."""

import json
import statistics
import time


def wall_times(fn, repeats=5, warmup=1):
    """Wall times of ``repeats`` runs of ``fn()`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, repeats=5, warmup=1):
    """Median wall time of ``fn()``: what a workload costs."""
    return statistics.median(wall_times(fn, repeats, warmup))


def finish(outputs):
    """Wait for ``outputs`` (tensors, or nests of them) by reading one element of each.

    Not ``.numpy()`` on the whole tensor: that copies it into a new NumPy array, which for a
    1M-coordinate rule step (a 330 MB state) cost more than the step itself.
    """
    import tensorflow as tf  # noqa: PLC0415  (the PyTorch benchmark imports this module too)

    return [tf.reshape(t, [-1])[:1].numpy() for t in tf.nest.flatten(outputs)]


def emit(name, result):
    """Print one JSON object ``{name: result}`` (what run_all collects)."""
    print(json.dumps({name: result}))
