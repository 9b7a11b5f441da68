"""What a meta-gradient estimator is: one optimizee's next truncation in, a meta-loss and meta-gradient out.

The trainer holds a batch of optimizees, each partway along its trajectory. For
each it asks the estimator for ``(meta_loss, grads, UnrollResult,
estimator_state)``; it averages the losses and gradients over the batch (across
tf.distribute replicas), applies the mean with its meta-optimizer and carries
every optimizee on to where its unroll ended.  An estimator is one file:
subclass :class:`Estimator`, implement :meth:`Estimator.gradient`, register it in
``l2o_tf.meta.estimators``.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from l2o_tf.meta import unroll as unroll_lib


class Truncation(NamedTuple):
    """Where one optimizee stands when its next truncation starts (stacked on a leading axis for a batch).

    ``estimator_state``: floats the estimator carries along the trajectory (PES: its
    accumulated perturbation; width 0 for the others).  ``loss_scale``: the optimizee's
    initial loss, dividing its losses under ``relative_loss`` (1 otherwise).
    """

    params: list
    state: tf.Tensor
    teacher_state: tf.Tensor
    estimator_state: tf.Tensor
    loss_scale: tf.Tensor
    seed: tf.Tensor
    start_step: tf.Tensor

    def optimizee(self, i):
        """The ``i``-th optimizee of a stacked batch (``start_step`` is shared)."""
        return Truncation([p[i] for p in self.params], self.state[i], self.teacher_state[i],
                          self.estimator_state[i], self.loss_scale[i], self.seed[i], self.start_step)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """What every optimizee of a meta step is unrolled on: the task, the unroll, the penalty and the teacher.

    ``teacher``: ``(rule, weight)`` of an imitated hand-designed rule, or None.
    ``scored``: whether the truncation's losses enter the meta-loss (``meta_loss_trajectory_start``).
    Built once per (task, penalized, scored) so that compiled steps trace once.
    """

    task: object
    unroll_config: unroll_lib.UnrollConfig
    penalty: object = None
    teacher: tuple = None
    scored: bool = True

    @property
    def trains(self):
        """Whether the meta-loss has a term at all (else the meta step only carries the optimizees on)."""
        return self.scored or self.penalty is not None or self.teacher is not None

    def unroll(self, rule, truncation):
        """One truncation of ``truncation``'s optimizee with ``rule`` (a rule, or a rule with explicit weights)."""
        teacher = None if self.teacher is None else (self.teacher[0], truncation.teacher_state, self.teacher[1])
        result = unroll_lib.unroll(self.task, rule, truncation.params, truncation.state, truncation.seed,
                                   truncation.start_step, self.unroll_config, teacher, self.penalty,
                                   truncation.loss_scale, self.scored)
        return result if result.teacher_state is not None else result._replace(teacher_state=truncation.teacher_state)


class Estimator:
    """Base class: turns one optimizee's truncation into a meta-loss and a meta-gradient for ``rule``'s weights.

    ``antithetic``: optimizees come in pairs (``2k``, ``2k + 1``) that share their
    seed (initial parameters and batches) and carry opposite perturbations.
    """

    name = None
    antithetic = False

    def __init__(self, rule):
        self.rule = rule

    @property
    def num_weights(self):
        return sum(w.shape.num_elements() for w in self.rule.trainable_weights)

    def state_size(self):
        """Floats per optimizee the estimator carries from one truncation to the next (checkpointed)."""
        return 0

    def gradient(self, problem, truncation, index, noise_seed):
        """``(meta_loss, grads, UnrollResult, estimator_state)`` of optimizee ``index``'s next truncation.

        ``noise_seed``: an int64 scalar that changes every meta step (random estimators draw from it).
        """
        raise NotImplementedError

    def _dense(self, grads):
        """``grads`` with ``None`` (weights the loss does not reach) as zeros."""
        return [tf.zeros_like(w) if g is None else g for g, w in zip(grads, self.rule.trainable_weights)]
