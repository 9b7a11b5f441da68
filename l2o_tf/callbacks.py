"""AdaptOnFit: test-time self-adaptation (M-L2O) of a learned optimizer to the model being fit."""

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
        keep_if_better: keep the adapted rule only if its meta-loss on ``check_unrolls`` held-out
            unrolls (batch seeds the adaptation never used) from the model's current weights is
            lower than the unadapted rule's; else keep the rule as it was.  ``kept`` records each
            decision.  Adaptation on a few unrolls can overfit them; this is the guard.
    """

    def __init__(self, x, y, steps=5, every=None, unroll=20, learning_rate=1e-3, batch_size=128, seed=0,
                 keep_if_better=True, check_unrolls=2):
        super().__init__()
        if steps < 1 or unroll < 1 or (every is not None and every < 1):
            raise ValueError(f"AdaptOnFit needs steps >= 1, unroll >= 1 and every >= 1, got {steps}, {unroll}, {every}.")
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.steps, self.every, self.unroll = int(steps), every, int(unroll)
        self.learning_rate, self.batch_size, self.seed = float(learning_rate), int(batch_size), int(seed)
        self.keep_if_better, self.check_unrolls = bool(keep_if_better), int(check_unrolls)
        self.adaptations, self.kept = 0, []

    def _adapt(self):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, LearnedOptimizer):
            raise TypeError(f"AdaptOnFit needs a model compiled with an l2o_tf.LearnedOptimizer, got {type(optimizer).__name__}.")
        model = self.model
        task = KerasModelTask(
            "adapt_on_fit", lambda seed: model, ((self.x, self.y), (self.x[:1], self.y[:1])),
            model.loss, batch_size=self.batch_size,
        )
        adapted = adaptation.adapt(
            optimizer.rule, task, steps=self.steps, learning_rate=self.learning_rate,
            unroll_length=self.unroll, seed=seeds.adaptation_round(self.seed, self.adaptations),
        )
        keep = True
        if self.keep_if_better:
            check_seed = seeds.adaptation_round(self.seed, self.adaptations) + self.steps  # past the adaptation's
            adapted_loss, current_loss = self._held_out_losses(optimizer.rule, [adapted, optimizer.rule], task, check_seed)
            keep = adapted_loss < current_loss
        if keep:
            for target, source in zip(optimizer.rule.weights, adapted.weights):
                target.assign(source.value)
        self.kept.append(bool(keep))
        self.adaptations += 1

    def _held_out_losses(self, rule, candidates, task, first_seed):
        """Mean meta-loss of each candidate's weights (in ``rule``) over the same ``check_unrolls`` unrolls from the
        model's current weights; one compiled unroll serves every candidate (the weights are its arguments)."""
        config = unroll_lib.UnrollConfig(self.unroll)
        loss = tf.function(lambda weights, start, seed: adaptation.unroll_meta_loss(rule, weights, task, start, seed, config))
        starts = [(adaptation.fresh_optimizee(rule, task, first_seed + i), tf.constant(first_seed + i, tf.int64))
                  for i in range(self.check_unrolls)]
        return [float(np.mean([loss([w.value for w in candidate.trainable_weights], *start) for start in starts]))
                for candidate in candidates]

    def on_train_begin(self, logs=None):
        self._adapt()

    def on_epoch_begin(self, epoch, logs=None):
        if self.every and epoch > 0 and epoch % self.every == 0:
            self._adapt()
