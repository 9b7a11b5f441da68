"""Persistent evolution strategies (Vicol, Metz and Sohl-Dickstein 2021): unbiased over whole trajectories.

As antithetic ES, but each particle credits its loss to the sum of *all* the
perturbations it has carried since its optimizee started (checkpointed as the
estimator state, reset with the optimizee).  The sum over a trajectory's
truncations of the batch-mean estimate is then an unbiased estimate of the
gradient of the whole trajectory's (Gaussian-smoothed) meta-loss, however short
the truncations, at the memory of truncated unrolls.
"""

from l2o_tf.meta.estimators.es import ES


class PES(ES):
    name = "pes"

    def state_size(self):
        return self.num_weights

    def carried(self, truncation, eps):
        return truncation.estimator_state + eps

    def next_state(self, truncation, credited):
        return credited
