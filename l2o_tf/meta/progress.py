"""The meta-training progress line: Keras's Progbar with whole-number counters and an honest ETA."""

import time

import keras


class MetaTrainProgbar(keras.utils.Progbar):
    """``keras.utils.Progbar`` that prints counters as integers and estimates the ETA from steady steps.

    The first step a process runs traces and compiles the meta step (seconds to minutes), and a
    resumed run starts at step ``k``: Keras's estimate counts both.  Here the step time is
    measured from the end of this process's first step onwards.
    """

    def __init__(self, target, **kwargs):
        super().__init__(target, **kwargs)
        self._steady_since = None  # (step, time) after this process's first step

    def update(self, current, values=None, counters=(), finalize=None):
        """``counters``: ``(name, int)`` pairs shown as integers (as floats where verbose != 1)."""
        values = list(values or [])
        if self.verbose == 1:
            for name, value in counters:
                if name not in self._values_order:
                    self._values_order.append(name)
                self._values[name] = int(value)  # not a list: Progbar prints it as is
        else:
            values += [(name, float(value)) for name, value in counters]
        super().update(current, values, finalize)

    def _estimate_step_duration(self, current, now):
        if self._steady_since is None:
            self._steady_since = (current, now)
            return 0.0
        steps = current - self._steady_since[0]
        return (now - self._steady_since[1]) / steps if steps > 0 else 0.0

    def start(self, current):
        """Mark ``current`` (the step a run resumes at) without drawing a line."""
        self._seen_so_far = current
        self._start = time.time()
