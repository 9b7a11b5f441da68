"""Task augmentations (learned_optimization's ``task_augmentation``): the same problem, seen differently.

A learned optimizer meta-trained on a few tasks learns their scales; these wrappers
vary what it sees so that it must normalise instead:

- :class:`Reparametrized`: every parameter tensor ``j`` is stored divided by a scale
  ``s_j`` and multiplied back inside the loss, so the function is unchanged while
  parameters shrink by ``s_j`` and their gradients grow by ``s_j``.
- :class:`GradientNoise`: Gaussian noise added to the gradients the optimizer sees
  (not to the loss, so the meta-objective is unchanged), drawn from the batch's
  stateless seed.
"""

import numpy as np
import tensorflow as tf

from l2o_tf.tasks.base import Task


class _Wrapped(Task):
    """Delegates everything it does not change to ``task``."""

    def __init__(self, task):
        self.task = task
        self.name = task.name

    def __getattr__(self, name):  # data_source, template, num_train, ... of the wrapped task
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def init_params(self, seed):
        return self.task.init_params(seed)

    def loss(self, params, batch):
        return self.task.loss(params, batch)

    def train_batch(self, seed, step):
        return self.task.train_batch(seed, step)

    def validation_batch(self, seed, step):
        return self.task.validation_batch(seed, step)

    def observed_gradients(self, grads, batch):
        return self.task.observed_gradients(grads, batch)

    def evaluate(self, params, seed=0):
        return self.task.evaluate(params, seed)

    def sharpness_batch(self, seed=0):
        return self.task.sharpness_batch(seed)


class Reparametrized(_Wrapped):
    """``task`` with parameter tensor ``j`` stored as ``theta_j / scales[j]``."""

    def __init__(self, task, scales):
        super().__init__(task)
        self.scales = [float(s) for s in scales]
        if not all(s > 0 for s in self.scales):
            raise ValueError(f"{task.name}: parameter scales must be > 0, got {self.scales}.")

    @classmethod
    def log_uniform(cls, task, seed, decades):
        """Scales ``10^u``, ``u ~ U(-decades, decades)`` per tensor, from ``seed``."""
        count = len(task.init_params(0))
        exponents = np.random.default_rng([int(seed), 0x5CA1E]).uniform(-decades, decades, count)
        return cls(task, 10.0**exponents)

    def _check(self, params):
        if len(params) != len(self.scales):
            raise ValueError(f"{self.name}: {len(params)} parameter tensors, but {len(self.scales)} scales.")

    def outer(self, params):
        """The wrapped task's parameters for stored ``params``."""
        self._check(params)
        return [p * s for p, s in zip(params, self.scales)]

    def init_params(self, seed):
        params = self.task.init_params(seed)
        self._check(params)
        return [p * (1.0 / s) for p, s in zip(params, self.scales)]

    def loss(self, params, batch):
        return self.task.loss(self.outer(params), batch)

    def evaluate(self, params, seed=0):
        return self.task.evaluate(self.outer(params), seed)


class GradientNoise(_Wrapped):
    """``task`` whose gradients reach the optimizer with ``N(0, stddev^2)`` noise added."""

    def __init__(self, task, stddev):
        super().__init__(task)
        if not stddev > 0:
            raise ValueError(f"{task.name}: gradient noise stddev must be > 0, got {stddev}.")
        self.stddev = float(stddev)

    def train_batch(self, seed, step):
        key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64) + 0x6E01])
        return self.task.train_batch(seed, step), key

    def sharpness_batch(self, seed=0):
        return self.task.sharpness_batch(seed), tf.constant([0, 0], tf.int64)

    def loss(self, params, batch):
        return self.task.loss(params, batch[0])

    def observed_gradients(self, grads, batch):
        grads = self.task.observed_gradients(grads, batch[0])
        key = batch[1]
        return [g + self.stddev * tf.random.stateless_normal(tf.shape(g), key + [0, 7919 * (j + 1)])
                for j, g in enumerate(grads)]
