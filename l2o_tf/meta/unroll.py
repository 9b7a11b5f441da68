"""Truncated unrolls: K optimizee steps in one tf.function, differentiable in the rule weights.

The optimizee's parameters are tensors, flattened into one coordinate vector
so that the rule runs once per step over all of them (the fused step).  One
function, :func:`optimizee_step`, is the step; the meta-training unroll and the
evaluation loop both call it, and it calls the same ``rule`` that
``LearnedOptimizer`` calls inside ``fit``.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from l2o_tf import seeds
from l2o_tf.rules.base import apply_rule
from l2o_tf.rules.layout import Layout


def flatten(tensors):
    """A list of tensors as one float32 vector."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat, like):
    """Split ``flat`` back into tensors shaped like the list ``like``."""
    sizes = [t.shape.num_elements() for t in like]
    return [tf.reshape(part, t.shape) for part, t in zip(tf.split(flat, sizes), like)]


def optimizee_step(task, rule, params, state, batch, step, second_order=False, teacher=None):
    """One optimizee step: loss and gradient at ``params``, then the rule's update.

    Returns ``(loss, new_params, new_state)``.  Following L2L, the gradient is a
    constant for meta-differentiation (``tf.stop_gradient``) unless
    ``second_order``, which keeps the Hessian terms.  With ``teacher=(rule,
    state)`` it also returns ``(imitation, teacher_state)``: the mean squared
    difference between the rule's updates and the teacher's on the same gradient.
    """
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = task.loss(params, batch)
    grads = tape.gradient(loss, params)
    # Dense: embedding gradients arrive as IndexedSlices; the rule sees every coordinate.
    grads = [tf.zeros_like(p) if g is None else tf.convert_to_tensor(g) for g, p in zip(grads, params)]
    grads = task.observed_gradients(grads, batch)
    if not second_order:
        grads = [tf.stop_gradient(g) for g in grads]
    flat_params, flat_grads = flatten(params), flatten(grads)
    step = tf.cast(step, tf.int64)
    updates, new_state = apply_rule(rule, flat_grads, flat_params, state, step, Layout.of(params))
    new_params = unflatten(flat_params + updates, params)
    if teacher is None:
        return loss, new_params, new_state
    teacher_rule, teacher_state = teacher
    target, teacher_state = teacher_rule(tf.stop_gradient(flat_grads), flat_params, teacher_state, step)
    imitation = tf.reduce_mean(tf.square(updates - tf.stop_gradient(target)))
    return loss, new_params, new_state, (imitation, teacher_state)


@dataclasses.dataclass(frozen=True)
class UnrollConfig:
    """How one truncation is unrolled.

    ``loss_weights``: ``"uniform"`` (L2L's sum of losses) or ``"increasing"``
    (weight ``t / K``, favouring where the truncation ends).  ``recompute``:
    keep only each step's inputs for the backward pass and recompute the step
    there (``tf.recompute_grad``): less memory for long unrolls, about one more
    forward pass of time.  ``log_loss``: weigh ``log f_t`` instead of ``f_t``,
    so that every decade of progress counts the same; for problems optimised to
    high precision (LASSO, quadratics), where ``f_t`` would only reward the first steps.
    Needs ``f_t > 0``.  ``relative_loss``: weigh ``f_t / f_0``, the loss relative to the
    optimizee's initial loss (the ``loss_scale`` the unroll is given), so that tasks whose
    losses differ by orders of magnitude weigh alike in one meta-batch (task families).
    ``validation_weight``: the meta-objective's share of the loss on the task's validation split
    (held out of its training data) at the same parameters: 0 trains on the training loss
    (L2L), 1 on the validation loss (Metz et al. 2019: optimizers meta-trained so generalize
    better), in between a mix.  Costs one more forward pass per step.
    """

    length: int = 20
    second_order: bool = False
    loss_weights: str = "uniform"
    recompute: bool = False
    log_loss: bool = False
    relative_loss: bool = False
    validation_weight: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.validation_weight <= 1.0:
            raise ValueError(f"validation_weight must be in [0, 1], got {self.validation_weight}.")
        if self.length < 1:
            raise ValueError(f"unroll length must be >= 1, got {self.length}.")
        if self.loss_weights not in ("uniform", "increasing"):
            raise ValueError(f"loss_weights must be 'uniform' or 'increasing', got {self.loss_weights!r}.")

    def scored(self, losses, loss_scale=None):
        """What the meta-loss weighs (validation scores the same): the losses, over ``loss_scale`` with
        ``relative_loss``, then their logs with ``log_loss``."""
        if self.relative_loss:
            if loss_scale is None:
                raise ValueError("relative_loss needs the optimizee's initial loss (loss_scale).")
            losses = losses / tf.stop_gradient(loss_scale)
        return tf.math.log(losses) if self.log_loss else losses

    def objective(self, task, params, train_loss, seed, step):
        """The meta-objective's loss at ``params``: ``train_loss`` (on the training batch of ``step``), mixed with
        the loss on the validation batch of ``step`` by ``validation_weight``."""
        w = self.validation_weight
        if not w:
            return train_loss
        validation_loss = task.loss(params, task.validation_batch(seed, step))
        return validation_loss if w == 1.0 else (1.0 - w) * train_loss + w * validation_loss

    def weights(self):
        k = self.length
        if self.loss_weights == "uniform":
            return [1.0 / k] * k
        total = k * (k + 1) / 2
        return [(t + 1) / total for t in range(k)]


class UnrollResult(NamedTuple):
    """What one truncation produced.  ``penalty`` is the summed flatness penalty (0 if none)."""

    meta_loss: tf.Tensor
    params: list
    state: tf.Tensor
    losses: tf.Tensor
    penalty: tf.Tensor
    teacher_state: object


def unroll(task, rule, params, state, seed, start_step, config, teacher=None, penalty=None, loss_scale=None,
           scored=True):
    """Run ``config.length`` steps from ``params`` and return an :class:`UnrollResult`.

    ``meta_loss = sum_t w_t f(params_t) [+ alpha sum_t R_t] [+ beta sum_t imitation_t]``
    over the parameters *after* each of the K updates (the loss before the
    first update does not depend on the rule); ``losses`` are the K values
    ``f(params_t)``.  Call inside a ``GradientTape`` to get the meta-gradient
    with respect to the rule's weights.

    With ``config.validation_weight`` the ``f`` of the meta-loss mixes in the validation split's loss
    (:meth:`UnrollConfig.objective`); ``losses`` stay the training losses.

    ``teacher=(rule, state, beta)`` adds imitation of a hand-designed teacher
    such as Adam.  ``penalty`` (a :class:`l2o_tf.meta.regularizers.Penalty`)
    adds ``alpha * R(params_t)`` on the batch of step ``t`` for every
    ``penalty.every``-th step of the unroll.  ``loss_scale``: the optimizee's
    initial loss, for ``config.relative_loss``.  ``scored=False``: the losses are not part of the
    meta-loss (a truncation before ``meta_loss_trajectory_start``); it holds only the penalty and imitation.
    """
    losses, objectives, imitation, penalty_sum = [], [], 0.0, tf.constant(0.0)
    if config.recompute:
        rule = _Recomputed(rule)
    for k in range(config.length):
        step = start_step + k
        batch, at = task.train_batch(seed, step), params
        if teacher is None:
            loss_k, params, state = optimizee_step(task, rule, params, state, batch, step, config.second_order)
        else:
            loss_k, params, state, (imitation_k, teacher_state) = optimizee_step(
                task, rule, params, state, batch, step, config.second_order, teacher[:2]
            )
            teacher = (teacher[0], teacher_state, teacher[2])
            imitation += imitation_k
        if penalty is not None and k % penalty.every == 0:
            penalty_seed = seeds.penalty_step(seed, step)
            penalty_sum += penalty(lambda p, b=batch: task.loss(p, b), params, penalty_seed)
        if k > 0:
            losses.append(loss_k)
            if scored:
                objectives.append(config.objective(task, at, loss_k, seed, step))
    end = start_step + config.length
    losses.append(task.loss(params, task.train_batch(seed, end)))
    meta_loss = tf.constant(0.0)
    if scored:
        objectives.append(config.objective(task, params, losses[-1], seed, end))
        weights = tf.constant(config.weights(), tf.float32)
        meta_loss = tf.reduce_sum(weights * config.scored(tf.stack(objectives), loss_scale))
    losses = tf.stack(losses)
    if penalty is not None:
        meta_loss += penalty.weight * penalty_sum
    teacher_state = None
    if teacher is not None:
        meta_loss += teacher[2] * imitation
        teacher_state = teacher[1]
    return UnrollResult(meta_loss, params, state, losses, penalty_sum, teacher_state)


class _Recomputed:
    """``rule`` under ``tf.recompute_grad``: the rule's activations (the bulk of an unroll's memory) are
    recomputed in the backward pass.  Only the rule: the optimizee gradient needs its own tape, which
    recompute_grad's forward pass would not record."""

    def __init__(self, rule):
        self.rule = rule
        self.apply = tf.recompute_grad(lambda grads, params, state, step: tuple(rule(grads, params, state, step)))

    def __call__(self, grads, params, state, step):
        return self.apply(grads, params, state, step)


def run(task, rule, params, state, seed, start_step, num_steps, objective=None):
    """Apply the rule for ``num_steps`` steps without meta-gradients (evaluation, validation).

    A ``tf.while_loop``: the graph does not grow with ``num_steps``.  Returns
    ``(params, state, losses)`` where ``losses[t]`` is the minibatch loss
    before update ``t``; with ``objective`` (an :class:`UnrollConfig`), the meta-objective's loss
    there instead (the validation split mixed in as meta-training mixes it).
    """
    losses = tf.TensorArray(tf.float32, size=num_steps)

    def body(t, params, state, losses):
        step = tf.cast(start_step, tf.int64) + tf.cast(t, tf.int64)
        loss, new_params, state = optimizee_step(task, rule, params, state, task.train_batch(seed, step), step)
        if objective is not None:
            loss = objective.objective(task, params, loss, seed, step)
        return t + 1, new_params, state, losses.write(t, loss)

    _, params, state, losses = tf.while_loop(
        lambda t, *_: t < num_steps, body, (tf.constant(0), params, state, losses)
    )
    return params, state, losses.stack()
