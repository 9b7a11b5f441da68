"""Synthetic optimizees: the L2L quadratic, LASSO, Rosenbrock and Rastrigin.

Each holds ``batch_size`` independent problems and reports their mean loss, as
in L2L's quadratic (128 problems of dimension 10).  The problem instance
(``W, y``) is the "batch": a stateless function of the seed, so a new seed is a
new optimizee and the same seed the same one, inside or outside tf.function.
The ``sigma`` knob scales the instance (LASSO/quadratic) or the start
(Rosenbrock/Rastrigin) for distribution-shift experiments.
"""

import math

import numpy as np
import tensorflow as tf

from l2o_tf.tasks.base import Task, stateless_seed


def _positive(name, **values):
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}: {key} must be > 0, got {value}.")


class LeastSquaresTask(Task):
    """``mean_b [scale * ||W_b x_b - y_b||^2 + l1 * ||x_b||_1]``, ``W ~ N(0, sigma^2)``, ``y ~ N(0, 1)``."""

    def __init__(self, name, batch_size, dim, num_rows, sigma, l1, scale, init_stddev):
        _positive(name, batch_size=batch_size, dim=dim, num_rows=num_rows, sigma=sigma)
        if l1 < 0:
            raise ValueError(f"{name}: l1 must be >= 0, got {l1}.")
        self.name = name
        self.batch_size, self.dim, self.num_rows = int(batch_size), int(dim), int(num_rows)
        self.sigma, self.l1, self.scale, self.init_stddev = float(sigma), float(l1), float(scale), float(init_stddev)

    def init_params(self, seed):
        shape = [self.batch_size, self.dim]
        return [self.init_stddev * tf.random.stateless_normal(shape, stateless_seed(seed, 1))]

    def train_batch(self, seed, step=0):
        w = self.sigma * tf.random.stateless_normal(
            [self.batch_size, self.num_rows, self.dim], stateless_seed(seed, 2)
        )
        y = tf.random.stateless_normal([self.batch_size, self.num_rows], stateless_seed(seed, 3))
        return (w, y)

    def loss(self, params, batch):
        (x,) = params
        w, y = batch
        residual = tf.einsum("brd,bd->br", w, x) - y
        per_problem = self.scale * tf.reduce_sum(tf.square(residual), axis=1)
        if self.l1:
            per_problem += self.l1 * tf.reduce_sum(tf.abs(x), axis=1)
        return tf.reduce_mean(per_problem)

    def evaluate(self, params, seed=0):
        return {"train_loss": float(self.loss(params, self.train_batch(seed)))}

    def solution(self, seed=0, iterations=20000):
        """Minimisers ``[batch, dim]`` of optimizee ``seed``: least squares in closed form, LASSO by FISTA (float64)."""
        w, y = (t.numpy().astype(np.float64) for t in self.train_batch(seed))
        solutions = []
        for wb, yb in zip(w, y):
            if not self.l1:
                solutions.append(np.linalg.lstsq(wb, yb, rcond=None)[0])
                continue
            lipschitz = 2.0 * self.scale * np.linalg.norm(wb, 2) ** 2
            x = z = np.zeros(self.dim)
            t = 1.0
            for _ in range(iterations):
                step = z - 2.0 * self.scale * wb.T @ (wb @ z - yb) / lipschitz
                x_next = np.sign(step) * np.maximum(np.abs(step) - self.l1 / lipschitz, 0.0)
                t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
                z = x_next + (t - 1.0) / t_next * (x_next - x)
                x, t = x_next, t_next
            solutions.append(x)
        return np.stack(solutions)

    def optimum(self, seed=0):
        """The minimum of optimizee ``seed``'s loss (at :meth:`solution`)."""
        w, y = (t.numpy().astype(np.float64) for t in self.train_batch(seed))
        x = self.solution(seed)
        per_problem = self.scale * np.sum((np.einsum("brd,bd->br", w, x) - y) ** 2, axis=1)
        return float(np.mean(per_problem + self.l1 * np.sum(np.abs(x), axis=1)))


def quadratic(batch_size=128, dim=10, sigma=1.0, init_stddev=0.01):
    """L2L's quadratic: 128 problems ``||W x - y||^2`` with ``W`` 10x10 (``mean`` over problems)."""
    return LeastSquaresTask("quadratic", batch_size, dim, dim, sigma, 0.0, 1.0, init_stddev)


def lasso(batch_size=1, dim=10, num_rows=None, sigma=1.0, l1=0.005, init_stddev=0.0):
    """M-L2O's LASSO ``1/2 ||W x - y||^2 + 0.005 ||x||_1``, ``W ~ N(0, sigma^2)``, from ``x = 0``."""
    return LeastSquaresTask("lasso", batch_size, dim, num_rows or dim, sigma, l1, 0.5, init_stddev)


class TestFunctionTask(Task):
    """A data-free test function over ``batch_size`` points of dimension ``dim``, start ``x ~ N(0, sigma^2)``.

    Subclasses give ``loss``; the "batch" is empty.
    """

    def __init__(self, batch_size, dim, sigma):
        _positive(self.name, batch_size=batch_size, dim=dim, sigma=sigma)
        self.batch_size, self.dim, self.sigma = int(batch_size), int(dim), float(sigma)

    def init_params(self, seed):
        return [self.sigma * tf.random.stateless_normal([self.batch_size, self.dim], stateless_seed(seed, 1))]

    def train_batch(self, seed, step=0):
        return ()

    def evaluate(self, params, seed=0):
        return {"train_loss": float(self.loss(params, ()))}

    def optimum(self, seed=0):
        """Both test functions have their global minimum 0 (Rosenbrock at 1, Rastrigin at 0)."""
        return 0.0


class Rosenbrock(TestFunctionTask):
    """``mean_b sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``, start ``x ~ N(0, sigma^2)``."""

    name = "rosenbrock"

    def __init__(self, batch_size=128, dim=2, sigma=1.0):
        if dim < 2:
            raise ValueError(f"rosenbrock: dim must be >= 2, got {dim}.")
        super().__init__(batch_size, dim, sigma)

    def loss(self, params, batch):
        (x,) = params
        head, tail = x[:, :-1], x[:, 1:]
        terms = 100.0 * tf.square(tail - tf.square(head)) + tf.square(1.0 - head)
        return tf.reduce_mean(tf.reduce_sum(terms, axis=1))


class Rastrigin(TestFunctionTask):
    """``mean_b [A n + sum_i x_i^2 - A cos(2 pi x_i)]``, ``A = 10``, start ``x ~ N(0, sigma^2)``."""

    name = "rastrigin"

    def __init__(self, batch_size=128, dim=10, sigma=2.0, amplitude=10.0):
        super().__init__(batch_size, dim, sigma)
        self.amplitude = float(amplitude)

    def loss(self, params, batch):
        (x,) = params
        terms = tf.square(x) - self.amplitude * tf.cos(2.0 * math.pi * x)
        return tf.reduce_mean(self.amplitude * self.dim + tf.reduce_sum(terms, axis=1))
