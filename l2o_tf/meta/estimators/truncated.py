"""Truncated backpropagation (L2L, the default): the exact gradient of each truncation's meta-loss.

Exact for the truncation, but the optimizee's state at the truncation's start is
treated as a constant: over a long trajectory the estimate is biased toward
short horizons (Wu et al. 2018).  Also carries the imitation teacher and the
flatness penalty, as every estimator that unrolls through :class:`Problem` does.
"""

import tensorflow as tf

from l2o_tf.meta.estimators.base import Estimator


class Truncated(Estimator):
    name = "truncated"

    def gradient(self, problem, truncation, index, noise_seed):
        with tf.GradientTape() as tape:
            result = problem.unroll(self.rule, truncation)
        grads = tape.gradient(result.meta_loss, self.rule.trainable_variables)
        return result.meta_loss, self._dense(grads), result, truncation.estimator_state
