"""AdaptOnFit: test-time self-adaptation (M-L2O) of a learned optimizer to the model being fit."""

import inspect
import time

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import kernels, seeds
from l2o_tf.meta import adaptation
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.optimizer import LearnedOptimizer
from l2o_tf.tasks.keras_model import KerasModelTask


class AdaptOnFit(keras.callbacks.Callback):
    """Adapt ``model.optimizer`` to this model on its own training batches.

    At the start of ``fit`` (and, with ``every=N``, at the start of every N-th epoch) two kinds of
    candidate are built: the rule after ``steps`` Adam steps of ``learning_rate`` on the meta-loss of
    ``unroll``-step unrolls from the model's *current* weights (M-L2O's test-time adaptation), and the
    rule as it is with its step size (the optimizer's ``learning_rate``) times each of ``scales``.  A
    guard then runs each candidate, and the optimizer as it is, over ``check_unrolls`` held-out
    trajectories (batch seeds the adaptation never used) from the current weights, as long as the
    fit has left to run until the next adaptation (``check_steps`` caps it), and scores each by its
    mean training loss over the last tenth of the trajectory: where the fit will end, not how fast it
    starts (a larger step often wins the first hundred steps and loses the thousandth; measured on
    the generalization suite).  The best candidate replaces the optimizer's rule weights or
    learning rate only if it beats the optimizer as it is on every held-out trajectory and by
    ``margin`` (relative) on average.  The model's weights and the per-coordinate state are untouched.

    Args:
        x, y: training inputs and targets (arrays) to draw unroll batches from.
        steps: adaptation steps of the rule's weights each time (0: only the step sizes).
        every: also adapt at the start of every ``every``-th epoch (None: only at the start).
        unroll: unroll length of the adaptation meta-loss.
        learning_rate: Adam learning rate of the adaptation.
        batch_size: unroll batch size (default 128).
        scales: multipliers of the optimizer's learning rate tried as candidates (1.0 is the rule as it is).
        keep_if_better: False keeps the adapted weights unchecked (and tries no scales).
        check_unrolls: held-out trajectories per candidate.
        check_steps: at most this many steps per held-out trajectory (None: as long as the fit has left
            until the next adaptation, or ``5 * unroll`` where Keras does not know the fit's length).
        margin: the relative gain on average the best candidate needs.

    ``kept`` records whether each adaptation changed the optimizer, ``decisions`` what it chose, the
    scores behind it and its wall time.  The guard costs ``check_unrolls * (len(scales) + 1)`` forward trajectories.
    """

    def __init__(self, x, y, steps=5, every=None, unroll=20, learning_rate=1e-3, batch_size=128, seed=0,
                 scales=(0.5, 1.0, 2.0), keep_if_better=True, check_unrolls=2, check_steps=None, margin=0.01):
        super().__init__()
        scales = tuple(float(s) for s in scales)
        if steps < 0 or unroll < 1 or (every is not None and every < 1):
            raise ValueError(f"AdaptOnFit needs steps >= 0, unroll >= 1 and every >= 1, got {steps}, {unroll}, {every}.")
        if check_unrolls < 1 or (check_steps is not None and check_steps < 10) or not 0 <= margin < 1:
            raise ValueError(f"AdaptOnFit needs check_unrolls >= 1, check_steps >= 10 and 0 <= margin < 1, got "
                             f"{check_unrolls}, {check_steps}, {margin}.")
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f"AdaptOnFit needs positive scales, got {scales}.")
        if not keep_if_better and set(scales) != {1.0}:
            raise ValueError("AdaptOnFit chooses among scales by its held-out check: keep_if_better=False needs "
                             f"scales=(1.0,), got {scales}.")
        if steps == 0 and set(scales) == {1.0}:
            raise ValueError("AdaptOnFit with steps=0 and scales=(1.0,) has nothing to adapt.")
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.steps, self.every, self.unroll = int(steps), every, int(unroll)
        self.learning_rate, self.batch_size, self.seed = float(learning_rate), int(batch_size), int(seed)
        self.scales, self.keep_if_better, self.check_unrolls = scales, bool(keep_if_better), int(check_unrolls)
        self.check_steps, self.margin = check_steps, float(margin)
        self.decisions = []

    @property
    def adaptations(self):
        """How many times it has adapted (each round draws its own seeds)."""
        return len(self.decisions)

    @property
    def kept(self):
        """Whether each adaptation changed the optimizer (its rule weights or learning rate)."""
        return [d["choice"] != "as is" for d in self.decisions]

    @classmethod
    def settings(cls, **kwargs):
        """Every setting but the data, defaults filled in (what a cached result of an adapted run depends on)."""
        parameters = inspect.signature(cls.__init__).parameters
        out = {name: p.default for name, p in parameters.items() if name not in ("self", "x", "y")}
        unknown = set(kwargs) - set(out)
        if unknown:
            raise TypeError(f"AdaptOnFit has no setting {', '.join(sorted(unknown))}.")
        out = {**out, **kwargs}
        out["scales"] = [float(s) for s in out["scales"]]
        return out

    def _horizon(self, epoch):
        """Steps of the held-out trajectories: what the fit has left until the next adaptation, capped."""
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps or not epochs:
            return int(self.check_steps or 5 * self.unroll)
        left = (epochs - epoch) if not self.every else min(self.every, epochs - epoch)
        horizon = max(1, int(steps) * left)
        return min(horizon, self.check_steps) if self.check_steps else horizon

    def task(self):
        """The model being fit as the optimizee that adaptation and the guard unroll: run as ``fit`` trains it
        (``training=True``: BatchNorm on each batch's statistics; on its initial moving statistics instead, the
        guard ranked candidates for another model and kept adapted weights that ended a BatchNorm net's fit worse)."""
        model = self.model
        return KerasModelTask("adapt_on_fit", lambda seed: model, ((self.x, self.y), (self.x[:1], self.y[:1])),
                              model.loss, batch_size=self.batch_size, batch_statistics=True)

    def _adapt(self, epoch):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, LearnedOptimizer):
            raise TypeError(f"AdaptOnFit needs a model compiled with an l2o_tf.LearnedOptimizer, got {type(optimizer).__name__}.")
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule) and (
                set(self.scales) != {1.0}):
            raise ValueError("AdaptOnFit's scales multiply a constant learning rate; this optimizer has a schedule: "
                             "pass scales=(1.0,).")
        rule, start = optimizer.rule, time.perf_counter()
        task = self.task()
        rate, first_seed = float(optimizer.learning_rate), seeds.adaptation_round(self.seed, self.adaptations)
        adapted_rule = adaptation.adapt(
            rule, task, steps=self.steps, learning_rate=self.learning_rate, unroll_length=self.unroll,
            seed=first_seed, scale=rate,
        ) if self.steps else None
        candidates = [("as is", rule, 1.0)] + [(f"lr x {s:g}", rule, s) for s in self.scales if s != 1.0]
        if adapted_rule is not None:
            candidates.append(("adapted", adapted_rule, 1.0))
        decision = {"epoch": int(epoch), "choice": "adapted" if adapted_rule is not None else "as is", "scale": 1.0}
        if self.keep_if_better:
            check_seed = first_seed + self.steps  # past the adaptation's
            horizon = self._horizon(epoch)
            scores = self._held_out_scores(rule, [(r, rate * s) for _, r, s in candidates], task, check_seed, horizon,
                                           optimizer.native_kernel)
            best = min(range(len(candidates)), key=lambda i: scores[i].mean())
            better = bool(best and np.all(scores[best] < scores[0])
                          and scores[best].mean() < (1.0 - self.margin) * scores[0].mean())
            label, _, scale = candidates[best if better else 0]
            decision = {"epoch": int(epoch), "choice": label, "scale": scale, "check_steps": horizon,
                        "scores": {c[0]: [float(v) for v in scores[i]] for i, c in enumerate(candidates)}}
        if decision["choice"] == "adapted":
            for target, source in zip(rule.weights, adapted_rule.weights):
                target.assign(source.value)
        if decision["scale"] != 1.0:
            optimizer.learning_rate = rate * decision["scale"]
        decision["seconds"] = time.perf_counter() - start
        self.decisions.append(decision)

    def _held_out_scores(self, rule, candidates, task, first_seed, horizon, native_kernel):
        """Per candidate ``(rule with rule's weights, step scale)``, the mean training loss over the last tenth of
        each of ``check_unrolls`` trajectories of ``horizon`` steps from the model's current weights (the same
        batches for every candidate): one compiled ``tf.while_loop`` serves them all (weights and scale are its
        arguments), through the rule step ``fit`` runs (the native kernel where the optimizer uses it: the whole
        adaptation took 18 s instead of 91 s on a suite MLP, benchmarks.adapt_on_fit_overhead)."""
        window = max(1, horizon // 10)

        def final_loss(weights, scale, params, state, seed):
            with kernels.native(native_kernel, whole_rule=True):
                _, _, losses = unroll_lib.run(task, adaptation.WithWeights(rule, weights, scale), params, state, seed, 0,
                                              horizon)
            return tf.reduce_mean(losses[-window:])

        final_loss = tf.function(final_loss)
        starts = [adaptation.fresh_optimizee(rule, task, first_seed + i) + (tf.constant(first_seed + i, tf.int64),)
                  for i in range(self.check_unrolls)]
        return [np.array([float(final_loss([w.value for w in candidate.trainable_weights], tf.constant(scale, tf.float32),
                                           *start)) for start in starts])
                for candidate, scale in candidates]

    def on_train_begin(self, logs=None):
        self._adapt(0)

    def on_epoch_begin(self, epoch, logs=None):
        if self.every and epoch > 0 and epoch % self.every == 0:
            self._adapt(epoch)
