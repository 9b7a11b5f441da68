"""One group of a meta step's optimizees, held between meta steps as stacked variables (checkpointed).

A group is the optimizees of one family member: their parameters flattened and stacked
on a leading axis, the rule's (and a teacher's) state per coordinate, the estimator's
carried floats and each optimizee's initial loss.  The coordinate axis has no fixed size,
so that a group can move from member to member (trajectories cycling through a family);
the member's parameter shapes give it meaning.
"""

import tensorflow as tf

from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.meta.estimators import Truncation


class OptimizeeBatch:
    """``size`` optimizees; ``initial``: one optimizee's flat parameters, which fix the first member's size."""

    def __init__(self, size, initial, rule, teacher, estimator_state_size):
        self.size, self.rule, self.teacher = size, rule, teacher
        n = initial.shape[0]
        self.params = self._variable(initial)
        self.state = self._variable(rule.initial_state(n))
        self.teacher_state = self._variable(teacher.initial_state(n) if teacher else tf.zeros([0]))
        # PES's accumulated perturbation per optimizee (width 0 for estimators that carry nothing).
        self.estimator_state = tf.Variable(tf.zeros([size, estimator_state_size]), trainable=False)
        # Each optimizee's initial loss: relative_loss divides its losses by it.
        self.loss_scale = tf.Variable(tf.ones([size]), trainable=False)

    def _stacked(self, value):
        return tf.stack([value] * self.size)

    def _variable(self, value):
        """A variable holding ``value`` for every optimizee; its axis 1 (coordinates) may change size."""
        value = self._stacked(value)
        shape = [value.shape[0]] + [None] * (value.shape.rank - 1) if value.shape.rank > 1 else value.shape
        return tf.Variable(value, shape=tf.TensorShape(shape), trainable=False)

    def truncation(self, shapes, optimizee_seeds, start_step):
        """The group as a stacked :class:`Truncation` of a member whose parameters have ``shapes``."""
        sizes = [shape.num_elements() for shape in shapes]
        n = sum(sizes)
        flat = tf.ensure_shape(self.params.value(), [self.size, n])
        params = [tf.reshape(part, [self.size] + shape.as_list())
                  for part, shape in zip(tf.split(flat, sizes, axis=1), shapes)]
        state = tf.ensure_shape(self.state.value(), [self.size, n, self.rule.state_size])
        teacher_state = self.teacher_state.value()
        if self.teacher is not None:
            teacher_state = tf.ensure_shape(teacher_state, [self.size, n, self.teacher.state_size])
        return Truncation(params, state, teacher_state, self.estimator_state.value(), self.loss_scale.value(),
                          tf.constant(optimizee_seeds, tf.int64), start_step)

    def reset(self, task, optimizee_seeds, relative_loss):
        """Fresh optimizees of ``task``, one per seed: initial parameters and states, no carried perturbation."""
        inits = [task.init_params(seed) for seed in optimizee_seeds]
        n = sum(p.shape.num_elements() for p in inits[0])
        self.params.assign(tf.stack([unroll_lib.flatten(init) for init in inits]))
        self.state.assign(self._stacked(self.rule.initial_state(n)))
        if self.teacher is not None:
            self.teacher_state.assign(self._stacked(self.teacher.initial_state(n)))
        self.estimator_state.assign(tf.zeros_like(self.estimator_state))
        if relative_loss:
            self.loss_scale.assign([float(task.loss(init, task.train_batch(seed, 0)))
                                    for init, seed in zip(inits, optimizee_seeds)])

    def carry(self, result, estimator_state):
        """Carry every optimizee on to where its unroll (an ``UnrollResult`` of the stacked group) ended."""
        self.params.assign(tf.concat([tf.reshape(p, [self.size, -1]) for p in result.params], axis=1))
        self.state.assign(result.state)
        self.teacher_state.assign(result.teacher_state)
        self.estimator_state.assign(estimator_state)
