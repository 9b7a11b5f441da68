"""AdaptOnFit: test-time self-adaptation (M-L2O) of a learned optimizer to the model being fit."""

import inspect

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import seeds
from l2o_tf.meta import adaptation
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.optimizer import LearnedOptimizer
from l2o_tf.tasks.keras_model import KerasModelTask


class AdaptOnFit(keras.callbacks.Callback):
    """Adapt ``model.optimizer``'s rule to this model on its own training batches.

    At the start of ``fit`` (and, with ``every=N``, at the start of every N-th
    epoch) the rule takes ``steps`` Adam steps of ``learning_rate`` on the
    meta-loss of ``unroll``-step unrolls that start from the model's *current*
    weights and use batches of ``(x, y)``.  Only the rule's weights change; the
    model's weights and the optimizer's per-coordinate state are untouched.

    Args:
        x, y: training inputs and targets (arrays) to draw unroll batches from.
        steps: adaptation steps each time.
        every: also adapt at the start of every ``every``-th epoch (None: only at the start).
        unroll: unroll length of the adaptation meta-loss.
        learning_rate: Adam learning rate of the adaptation.
        batch_size: unroll batch size (default 128).
        keep_if_better: keep the adapted rule only if, on ``check_unrolls`` held-out trajectories
            of ``check_steps`` steps (default ``5 * unroll``; batch seeds the adaptation never used)
            from the model's current weights, its mean training loss is lower than the unadapted
            rule's on every one and lower by ``margin`` (relative) on average; else keep the rule as
            it was.  ``kept`` records each decision.  Adaptation on a few short unrolls can overfit
            them, and what helps over 20 steps can hurt over 1,000 (seen on the generalization
            suite with 20-step checks); longer checks and a margin are the guard.
    """

    def __init__(self, x, y, steps=5, every=None, unroll=20, learning_rate=1e-3, batch_size=128, seed=0,
                 keep_if_better=True, check_unrolls=2, check_steps=None, margin=0.01):
        super().__init__()
        if steps < 1 or unroll < 1 or (every is not None and every < 1):
            raise ValueError(f"AdaptOnFit needs steps >= 1, unroll >= 1 and every >= 1, got {steps}, {unroll}, {every}.")
        if check_unrolls < 1 or (check_steps is not None and check_steps < 2) or not 0 <= margin < 1:
            raise ValueError(f"AdaptOnFit needs check_unrolls >= 1, check_steps >= 2 and 0 <= margin < 1, got "
                             f"{check_unrolls}, {check_steps}, {margin}.")
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.steps, self.every, self.unroll = int(steps), every, int(unroll)
        self.learning_rate, self.batch_size, self.seed = float(learning_rate), int(batch_size), int(seed)
        self.keep_if_better, self.check_unrolls = bool(keep_if_better), int(check_unrolls)
        self.check_steps, self.margin = int(check_steps or 5 * self.unroll), float(margin)
        self.adaptations, self.kept = 0, []

    @classmethod
    def settings(cls, **kwargs):
        """Every setting but the data, defaults filled in (what a cached result of an adapted run depends on)."""
        parameters = inspect.signature(cls.__init__).parameters
        out = {name: p.default for name, p in parameters.items() if name not in ("self", "x", "y")}
        unknown = set(kwargs) - set(out)
        if unknown:
            raise TypeError(f"AdaptOnFit has no setting {', '.join(sorted(unknown))}.")
        return {**out, **kwargs}

    def _adapt(self):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, LearnedOptimizer):
            raise TypeError(f"AdaptOnFit needs a model compiled with an l2o_tf.LearnedOptimizer, got {type(optimizer).__name__}.")
        model = self.model
        task = KerasModelTask(
            "adapt_on_fit", lambda seed: model, ((self.x, self.y), (self.x[:1], self.y[:1])),
            model.loss, batch_size=self.batch_size,
        )
        adapted_rule = adaptation.adapt(
            optimizer.rule, task, steps=self.steps, learning_rate=self.learning_rate,
            unroll_length=self.unroll, seed=seeds.adaptation_round(self.seed, self.adaptations),
        )
        keep = True
        if self.keep_if_better:
            check_seed = seeds.adaptation_round(self.seed, self.adaptations) + self.steps  # past the adaptation's
            adapted, current = self._held_out_losses(optimizer.rule, [adapted_rule, optimizer.rule], task, check_seed)
            keep = bool(np.all(adapted < current) and adapted.mean() < (1.0 - self.margin) * current.mean())
        if keep:
            for target, source in zip(optimizer.rule.weights, adapted_rule.weights):
                target.assign(source.value)
        self.kept.append(bool(keep))
        self.adaptations += 1

    def _held_out_losses(self, rule, candidates, task, first_seed):
        """Per candidate (weights of ``rule``), the mean training loss of each of ``check_unrolls`` trajectories of
        ``check_steps`` steps from the model's current weights (the same batches for every candidate): one
        compiled ``tf.while_loop`` serves them all (the weights are its arguments)."""

        def mean_loss(weights, params, state, seed):
            _, _, losses = unroll_lib.run(task, adaptation.WithWeights(rule, weights), params, state, seed, 0,
                                          self.check_steps)
            return tf.reduce_mean(losses[1:])  # the first loss does not depend on the rule

        mean_loss = tf.function(mean_loss)
        starts = [adaptation.fresh_optimizee(rule, task, first_seed + i) + (tf.constant(first_seed + i, tf.int64),)
                  for i in range(self.check_unrolls)]
        return [np.array([float(mean_loss([w.value for w in candidate.trainable_weights], *start)) for start in starts])
                for candidate in candidates]

    def on_train_begin(self, logs=None):
        self._adapt()

    def on_epoch_begin(self, epoch, logs=None):
        if self.every and epoch > 0 and epoch % self.every == 0:
            self._adapt()
