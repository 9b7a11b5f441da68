"""M-L2O ("Towards Generalizable L2O by Test-Time Fast Self-Adaptation"): MAML over task families.

The optimizer's own weights are adapted: an *inner* step of SGD on one
unroll's meta-loss of a sampled task, then an *outer* meta-gradient of a fresh
unroll of the same task with the adapted weights.  Second-order MAML
differentiates through the inner step (nested tapes); first-order MAML (the
reference code's choice) drops the inner step's Jacobian.  At test time,
:func:`adapt` takes a few Adam steps on the target task's unroll meta-loss.
All of it runs the rule through ``Layer.stateless_call``, so weights are
tensors and the rule object itself is never modified.
"""

import dataclasses

import keras
import tensorflow as tf

from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.rules import baselines
from l2o_tf.optimizer import LearnedOptimizer


class WithWeights:
    """The rule called with explicit weight tensors (what the unroll calls as ``rule``); its updates times
    ``scale``, as ``LearnedOptimizer(rule, learning_rate=scale)`` applies them."""

    def __init__(self, rule, weights, scale=1.0):
        self.rule, self.weights, self.scale = rule, list(weights), scale
        self.LAYOUT_AWARE = rule.LAYOUT_AWARE

    def __call__(self, grads, params, state, step, **layout):
        (updates, new_state), _ = self.rule.stateless_call(self.weights, [], grads, params, state, step, **layout)
        return updates * self.scale, new_state


def fresh_optimizee(rule, task, seed):
    """``(params, rule state)`` of optimizee ``seed`` at its start (eager: Keras tasks build models)."""
    params = task.init_params(int(seed))
    return params, rule.initial_state(sum(p.shape.num_elements() for p in params))


def unroll_with_weights(rule, weights, task, start, seed, unroll_config, start_step=0, loss_scale=None, scale=1.0):
    """One unroll from ``start = (params, state)`` of optimizee ``seed`` at ``start_step``, rule weights ``weights``
    (updates times ``scale``)."""
    params, state = start
    return unroll_lib.unroll(task, WithWeights(rule, weights, scale), params, state, seed, start_step, unroll_config,
                             loss_scale=loss_scale)


def unroll_meta_loss(rule, weights, task, start, seed, unroll_config, start_step=0, loss_scale=None, scale=1.0):
    """The meta-loss of :func:`unroll_with_weights`."""
    return unroll_with_weights(rule, weights, task, start, seed, unroll_config, start_step, loss_scale, scale).meta_loss


def copy_rule(rule):
    """An independent rule with ``rule``'s config and weights (adapting it leaves ``rule`` untouched)."""
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rule))
    for target, source in zip(copy.weights, rule.weights):
        target.assign(source.value)
    return copy


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Inner loop: ``inner_steps`` steps of ``inner_optimizer`` (lr ``inner_lr``) on one unroll's meta-loss.

    ``inner_optimizer``: ``"sgd"`` (the reference code's) or ``"adam"``: Adam
    from fresh moments, i.e. what :func:`adapt` does at test time, so that
    meta-training anticipates the adaptation that will actually be run.
    """

    inner_steps: int = 1
    inner_lr: float = 1e-3
    second_order: bool = False
    inner_optimizer: str = "sgd"

    INNER_OPTIMIZERS = ("sgd", "adam")

    def __post_init__(self):
        if self.inner_steps < 1 or self.inner_lr <= 0:
            raise ValueError(f"MAML needs inner_steps >= 1 and inner_lr > 0, got {self.inner_steps}, {self.inner_lr}.")
        if self.inner_optimizer not in self.INNER_OPTIMIZERS:
            raise ValueError(f"MAML inner_optimizer must be one of {self.INNER_OPTIMIZERS}, got {self.inner_optimizer!r}.")

    def inner_rule(self):
        """The inner optimizer as an update rule (the same Adam as ``keras.optimizers.Adam``, tested equal)."""
        rule = baselines.Adam if self.inner_optimizer == "adam" else baselines.SGD
        return rule(learning_rate=self.inner_lr)


def maml_meta_gradient(rule, task, inner, outer, unroll_config, maml_config, start_step=0, return_unroll=False,
                       loss_scale=None):
    """``(outer_loss, gradient w.r.t. the rule's weights)`` of one MAML task step.

    ``inner`` and ``outer`` are ``(start, seed)`` optimizees of the same task
    (``start`` = ``(params, state)``, e.g. from :func:`fresh_optimizee`), both
    unrolled from ``start_step``.  With ``return_unroll`` the outer
    :class:`UnrollResult` (adapted weights) comes third, to carry the optimizee on.
    Inner: ``w' = w - inner_lr * grad_w L(w; inner)`` (``inner_steps`` times; or Adam's step).
    Outer: ``L(w'; outer)``.  Second-order differentiates ``w'`` w.r.t. ``w``;
    first-order treats ``dw'/dw = I``.  ``loss_scale``: the optimizee's initial loss
    (``unroll_config.relative_loss``).
    """
    weights = [w.value for w in rule.trainable_weights]
    inner_rule = maml_config.inner_rule()
    with tf.GradientTape() as outer_tape:
        outer_tape.watch(weights)
        adapted = list(weights)
        inner_state = inner_rule.initial_state(sum(w.shape.num_elements() for w in weights))
        for step in range(maml_config.inner_steps):
            with tf.GradientTape() as inner_tape:
                inner_tape.watch(adapted)
                inner_loss = unroll_meta_loss(rule, adapted, task, *inner, unroll_config, start_step, loss_scale)
            grads = inner_tape.gradient(inner_loss, adapted)
            if not maml_config.second_order:
                grads = [tf.stop_gradient(g) for g in grads]
            flat = unroll_lib.flatten(adapted)
            updates, inner_state = inner_rule(unroll_lib.flatten(grads), flat, inner_state, tf.constant(step, tf.int64))
            adapted = unroll_lib.unflatten(flat + updates, adapted)
        outer = unroll_with_weights(rule, adapted, task, *outer, unroll_config, start_step, loss_scale)
    grads = outer_tape.gradient(outer.meta_loss, weights)
    return (outer.meta_loss, grads, outer) if return_unroll else (outer.meta_loss, grads)


def adapt(optimizer, task, steps=5, learning_rate=1e-3, unroll_length=20, seed=0, log_loss=False, scale=1.0):
    """Test-time adaptation: a copy of ``optimizer`` whose rule took ``steps`` Adam steps on ``task``.

    Each step minimises the meta-loss of a ``unroll_length``-step unroll of a
    fresh optimizee of ``task`` (seeds ``seed, seed + 1, ...``); ``log_loss`` as
    in :class:`l2o_tf.meta.UnrollConfig`; the updates times ``scale`` (the learning
    rate the rule will be applied with).  The given optimizer is left untouched.
    """
    if steps < 0:
        raise ValueError(f"adapt needs steps >= 0, got {steps}.")
    rule = optimizer.rule if isinstance(optimizer, LearnedOptimizer) else optimizer
    if not rule.trainable_weights:
        raise ValueError(f"{type(rule).__name__} has no weights to adapt.")
    copy = copy_rule(rule)
    config = unroll_lib.UnrollConfig(unroll_length, log_loss=log_loss)
    meta_optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(start, optimizee_seed):
        with tf.GradientTape() as tape:
            loss = unroll_meta_loss(copy, [w.value for w in copy.trainable_weights], task, start, optimizee_seed, config,
                                    scale=scale)
        meta_optimizer.apply_gradients(zip(tape.gradient(loss, copy.trainable_weights), copy.trainable_weights))
        return loss

    for i in range(steps):
        step(fresh_optimizee(copy, task, seed + i), tf.constant(seed + i, tf.int64))
    if isinstance(optimizer, LearnedOptimizer):
        config_kwargs = {k: v for k, v in optimizer.get_config().items() if k not in ("rule", "rule_weights", "name")}
        return LearnedOptimizer(copy, **config_kwargs)
    return copy
