"""Antithetic evolution strategies over the rule's weights (no backpropagation through the unroll).

Optimizees ``2k`` and ``2k + 1`` share a seed and unroll with weights
``w + eps_k`` and ``w - eps_k``, ``eps_k ~ N(0, sigma^2 I)`` fresh every meta step.
Each returns ``eps * L / sigma^2`` with its own sign of ``eps``; their mean over the
batch is ``mean_k eps_k (L+ - L-) / (2 sigma^2)``, the gradient of the
Gaussian-smoothed meta-loss.  Over a full trajectory (``--unroll`` equal to the
trajectory length) it is unbiased for the smoothed objective; over truncations
each particle carries its own optimizee (learned_optimization's truncated ES)
and the estimate ignores earlier truncations, as truncated backprop does.
Needs no derivative of the rule or the task: non-differentiable steps and long
unrolls cost only forward passes.
"""

import tensorflow as tf

from l2o_tf import seeds
from l2o_tf.meta import adaptation
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.meta.estimators.base import Estimator


class ES(Estimator):
    name = "es"
    antithetic = True

    def __init__(self, rule, sigma):
        super().__init__(rule)
        if not sigma > 0:
            raise ValueError(f"{self.name} needs a perturbation scale sigma > 0, got {sigma}.")
        self.sigma = float(sigma)

    def perturbation(self, index, noise_seed):
        """``eps`` of optimizee ``index`` as one flat vector: the pair's draw, negated for odd ``index``."""
        index = tf.cast(index, tf.int64)
        sign = 1.0 - 2.0 * tf.cast(index % 2, tf.float32)
        draw = tf.random.stateless_normal([self.num_weights], seeds.perturbation(noise_seed, index // 2))
        return sign * self.sigma * draw

    def carried(self, truncation, eps):
        """The perturbation the loss is credited to: this truncation's only."""
        return eps

    def gradient(self, problem, truncation, index, noise_seed):
        eps = self.perturbation(index, noise_seed)
        weights = [w.value for w in self.rule.trainable_weights]
        perturbed = [w + e for w, e in zip(weights, unroll_lib.unflatten(eps, weights))]
        result = problem.unroll(adaptation.WithWeights(self.rule, perturbed), truncation)
        credited = self.carried(truncation, eps)
        loss = tf.stop_gradient(result.meta_loss)
        grads = unroll_lib.unflatten(credited * (loss / self.sigma**2), weights)
        return loss, grads, result, self.next_state(truncation, credited)

    def next_state(self, truncation, credited):
        return truncation.estimator_state
