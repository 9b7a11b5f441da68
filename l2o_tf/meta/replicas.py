"""The batch of a meta step split over a tf.distribute strategy's replicas, and reduced back.

Each replica runs the estimator on its share of the stacked optimizees (one
compiled call per optimizee), sums their meta-losses and meta-gradients divided
by the global batch, and the strategy all-reduces the sums (SUM: the batch mean)
and gathers the optimizees' new states back into one stacked batch.  What is
learned does not depend on the number of replicas.
"""

import tensorflow as tf

from l2o_tf import kernels
from l2o_tf.meta import unroll as unroll_lib


class ReplicaSplit:
    """``meta_gradient(problem, truncation, noise_seed)`` of ``estimator`` over a stacked batch of ``batch`` optimizees.

    ``carries_teacher`` / ``carries_estimator_state``: whether those stacked
    tensors are non-empty (all-gathering an empty tensor crashes TF, so unused
    ones pass through untouched).  ``first_index``: the estimator's number for
    the batch's first optimizee (a meta step of several groups numbers them
    across groups, so that no two draw the same perturbation).
    """

    def __init__(self, strategy, estimator, batch, jit_compile=False, native_kernel=False,
                 carries_teacher=False, carries_estimator_state=False, first_index=0):
        replicas = strategy.num_replicas_in_sync
        if batch % replicas:
            raise ValueError(f"optimizees ({batch}) must be a multiple of the strategy's {replicas} replicas.")
        self.strategy, self.estimator, self.batch, self.first_index = strategy, estimator, batch, first_index
        self.native_kernel = native_kernel
        self.carries_teacher, self.carries_estimator_state = carries_teacher, carries_estimator_state
        self._one = tf.function(self._one_optimizee, jit_compile=True) if jit_compile else self._one_optimizee

    def _one_optimizee(self, problem, truncation, index, noise_seed):
        with kernels.native(self.native_kernel):
            return self.estimator.gradient(problem, truncation, index, noise_seed)

    def _replica(self, problem, truncation, noise_seed):
        """This replica's share: sums of meta-losses and meta-gradients over the global batch, results stacked."""
        local = self.batch // self.strategy.num_replicas_in_sync
        first = tf.distribute.get_replica_context().replica_id_in_sync_group * local
        loss_sum, grad_sum, results, states = 0.0, None, [], []
        for b in range(local):
            i = first + b
            loss, grads, result, state = self._one(
                problem, truncation.optimizee(i), tf.cast(self.first_index + i, tf.int64), noise_seed)
            loss_sum += loss / self.batch
            grads = [g / self.batch for g in grads]
            grad_sum = grads if grad_sum is None else [a + g for a, g in zip(grad_sum, grads)]
            results.append(result)
            states.append(state)
        stack = lambda field: tf.stack([getattr(r, field) for r in results])  # noqa: E731
        stacked = unroll_lib.UnrollResult(
            loss_sum, [tf.stack([r.params[j] for r in results]) for j in range(len(truncation.params))],
            stack("state"), stack("losses"), stack("penalty"),
            stack("teacher_state") if self.carries_teacher else None,
        )
        return grad_sum, stacked, tf.stack(states) if self.carries_estimator_state else None

    def meta_gradient(self, problem, truncation, noise_seed):
        """``(grads, UnrollResult, estimator_state)``: the batch-mean meta-gradient (all-reduced), the batch's
        unroll results and estimator states gathered (``meta_loss``: the batch mean)."""
        grads, per_replica, states = self.strategy.run(
            lambda t, s: self._replica(problem, t, s), args=(truncation, noise_seed))
        total = lambda value: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)  # noqa: E731
        gather = lambda value: self.strategy.gather(value, axis=0)  # noqa: E731
        result = unroll_lib.UnrollResult(
            total(per_replica.meta_loss), [gather(p) for p in per_replica.params], gather(per_replica.state),
            gather(per_replica.losses), gather(per_replica.penalty),
            gather(per_replica.teacher_state) if self.carries_teacher else truncation.teacher_state,
        )
        states = gather(states) if self.carries_estimator_state else truncation.estimator_state
        return [total(g) for g in grads], result, states
