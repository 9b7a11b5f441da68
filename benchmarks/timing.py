"""Shared timing helpers: warm up, then the median of repeated runs; what the figures ran on."""

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


def machine():
    """What the figures were measured on (see :func:`l2o_tf.machine.describe`)."""
    from l2o_tf.machine import describe  # noqa: PLC0415  (imports TensorFlow)

    return describe()


class PeakMemory:
    """Peak memory of a block, over what was in use when it began (bytes).

    TensorFlow's CPU allocator statistics where this TensorFlow can reset them; else (some
    builds raise ``ValueError: Cannot reset memory stats for device 'CPU:0'``) the process's
    peak resident set, reset through ``/proc/self/clear_refs``.  ``source`` says which.
    """

    def __enter__(self):
        import tensorflow as tf  # noqa: PLC0415

        try:
            tf.config.experimental.reset_memory_stats("CPU:0")
            self.source = "tensorflow CPU allocator"
            self._read = lambda: tf.config.experimental.get_memory_info("CPU:0")
        except ValueError:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak resident set (VmHWM) to the current one
            self.source = "process peak resident set"
            self._read = _resident_set
        self._before = self._read()["current"]
        return self

    def __exit__(self, *exc):
        self.bytes = self._read()["peak"] - self._before
        return False


def _resident_set():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    kib = lambda key: int(fields[key].split()[0]) * 1024  # noqa: E731
    return {"current": kib("VmRSS"), "peak": kib("VmHWM")}


def emit(name, result):
    """Print one JSON object ``{name: result, "machine": machine()}`` (what run_all collects)."""
    print(json.dumps({name: result, "machine": machine()}))
