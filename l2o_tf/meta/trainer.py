"""MetaTrainer: learn a rule's weights by truncated unrolls over a stream of fresh optimizees.

Everything a run needs to continue exactly lives in one ``tf.train.Checkpoint``
managed by ``tf.train.CheckpointManager``: rule weights, meta-optimizer slots,
the counters (meta step, trajectory index, optimizee step, curriculum stage,
validation best / patience) and the current optimizee's parameters and rule
state.  Optimizee seeds and batches are pure functions of those counters, so
no RNG state needs saving.
"""

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from l2o_tf import kernels, rules, seeds, tasks
from l2o_tf.meta import adaptation
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.meta.config import MetaTrainConfig
from l2o_tf.meta.progress import MetaTrainProgbar



class MetaTrainer:
    """Meta-trains ``config.rule`` on ``config.task``; ``out_dir`` holds checkpoints, config and logs.

    ``strategy``: a ``tf.distribute.Strategy`` (default: the current one); its
    replicas share the ``config.distribution.optimizees`` optimizees of each meta step.
    The strategy does not change what is learned, so it is not part of the config.
    """

    def __init__(self, config, out_dir, task=None, strategy=None):
        self.config = config
        self.out_dir = out_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if config.distribution.optimizees % replicas:
            raise ValueError(
                f"optimizees ({config.distribution.optimizees}) must be a multiple of the strategy's {replicas} replicas."
            )
        if config.task_family:
            # A family over the shift knob sigma; trajectory i trains on member i mod len(family).
            family = tasks.family(config.task, config.task_family, **config.task_kwargs)
            self.tasks = [build() for build in family.builders]
        else:
            self.tasks = [task or tasks.get(config.task, **config.task_kwargs)]
        self.task = self.tasks[0]
        with self.strategy.scope():  # rule weights and meta-optimizer slots are mirrored
            self.rule = rules.get(config.rule, seed=config.seed, **config.rule_kwargs)
            if not self.rule.trainable_weights:
                raise ValueError(f"rule {config.rule!r} has no weights to meta-train; use dmlstm or rnnprop.")
            self.meta_optimizer = keras.optimizers.Adam(config.meta_lr, global_clipnorm=config.clipnorm)
            self.meta_optimizer.build(self.rule.trainable_variables)
        self.unroll_config = config.unrolling.unroll_config()

        counter = lambda value=0: tf.Variable(value, dtype=tf.int64, trainable=False)  # noqa: E731
        self.meta_step = counter()
        self.trajectory_index = counter()
        self.optimizee_step = counter()
        self.stage = counter()
        self.skips = counter()
        self.consecutive_skips = counter()
        self.bad_validations = counter()
        self.best_validation = tf.Variable(math.inf, dtype=tf.float32, trainable=False)
        batch = config.distribution.optimizees
        initial = self.task.init_params(0)
        # The optimizees of a meta step, stacked on a leading axis of size ``optimizees``.
        self.params = [tf.Variable(tf.stack([p] * batch), trainable=False) for p in initial]
        self.num_coordinates = sum(p.shape.num_elements() for p in initial)
        self.state = tf.Variable(self._stacked(self.rule.initial_state(self.num_coordinates)), trainable=False)
        # Optional Adam teacher whose updates the rule imitates (its state follows the optimizee).
        self.teacher = rules.Adam(learning_rate=config.imitation.imitation_lr) if config.imitation.imitation_weight > 0 else None
        self.teacher_state = tf.Variable(
            self._stacked(self.teacher.initial_state(self.num_coordinates) if self.teacher else tf.zeros([0])),
            trainable=False,
        )

        self.checkpoint = tf.train.Checkpoint(
            rule_weights=list(self.rule.weights),
            meta_optimizer_variables=list(self.meta_optimizer.variables),
            meta_step=self.meta_step,
            trajectory_index=self.trajectory_index,
            optimizee_step=self.optimizee_step,
            stage=self.stage,
            skips=self.skips,
            consecutive_skips=self.consecutive_skips,
            bad_validations=self.bad_validations,
            best_validation=self.best_validation,
            params=self.params,
            state=self.state,
        )
        if self.teacher is not None:  # only runs with imitation carry a teacher state
            self.checkpoint.teacher_state = self.teacher_state
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=3)
        self.penalty = config.penalty.penalty()
        self.maml = config.maml.maml_config()
        self._compiled = {}
        self._verbose = 0
        self._run = tf.function(self._run_fn)
        self._one = tf.function(self._one_optimizee, jit_compile=True) if config.unrolling.jit_compile else self._one_optimizee
        if config.unrolling.native_kernel:
            kernels.load()  # build it now: a missing compiler is reported here, not mid-trace

    def _stacked(self, value):
        return tf.stack([value] * self.config.distribution.optimizees)

    # -- compiled pieces --------------------------------------------------------
    def _one_optimizee(self, task, penalty, params, state, teacher_state, seed, start_step):
        """Meta-loss, meta-gradient and unroll result for one optimizee's truncation."""
        with kernels.native(self.config.unrolling.native_kernel):
            return self._one_optimizee_traced(task, penalty, params, state, teacher_state, seed, start_step)

    def _one_optimizee_traced(self, task, penalty, params, state, teacher_state, seed, start_step):
        variables = self.rule.trainable_variables
        if self.maml is not None:  # M-L2O: adapt on this truncation, judge the adapted rule on it
            start = (params, state)
            loss, grads, result = adaptation.maml_meta_gradient(
                self.rule, task, (start, seed), (start, seed), self.unroll_config, self.maml, start_step,
                return_unroll=True,
            )
        else:
            teacher = None if self.teacher is None else (self.teacher, teacher_state, self.config.imitation.imitation_weight)
            with tf.GradientTape() as tape:
                result = unroll_lib.unroll(task, self.rule, params, state, seed, start_step, self.unroll_config, teacher, penalty)
            loss, grads = result.meta_loss, tape.gradient(result.meta_loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        if result.teacher_state is None:
            result = result._replace(teacher_state=teacher_state)
        return loss, grads, result

    def _replica_meta_gradient(self, task, penalty, params, state, teacher_state, optimizee_seeds, start_step):
        """This replica's share of the batch: sums of meta-losses and meta-gradients over ``optimizees``."""
        batch = self.config.distribution.optimizees
        local = batch // self.strategy.num_replicas_in_sync
        first = tf.distribute.get_replica_context().replica_id_in_sync_group * local
        loss_sum, grad_sum, results = 0.0, None, []
        for b in range(local):
            i = first + b
            loss, grads, result = self._one(
                task, penalty, [p[i] for p in params], state[i], teacher_state[i], optimizee_seeds[i], start_step
            )
            loss_sum += loss / batch
            grads = [g / batch for g in grads]
            grad_sum = grads if grad_sum is None else [a + g for a, g in zip(grad_sum, grads)]
            results.append(result)
        stack = lambda field: tf.stack([getattr(r, field) for r in results])  # noqa: E731
        stacked = unroll_lib.UnrollResult(
            loss_sum, [tf.stack([r.params[j] for r in results]) for j in range(len(params))],
            stack("state"), stack("losses"), stack("penalty"),
            stack("teacher_state") if self.teacher is not None else None,
        )
        return grad_sum, stacked

    def _meta_gradient_fn(self, task, penalty, params, state, teacher_state, optimizee_seeds, start_step):
        """All-reduced mean meta-gradient over the batch, and the batch's unroll results gathered."""
        grads, per_replica = self.strategy.run(
            lambda *args: self._replica_meta_gradient(task, penalty, *args),
            args=(params, state, teacher_state, optimizee_seeds, start_step),
        )
        total = lambda value: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)  # noqa: E731
        gather = lambda value: self.strategy.gather(value, axis=0)  # noqa: E731
        result = unroll_lib.UnrollResult(
            total(per_replica.meta_loss), [gather(p) for p in per_replica.params], gather(per_replica.state),
            gather(per_replica.losses), gather(per_replica.penalty),
            # Without a teacher its state is empty, and all-gathering an empty tensor crashes TF: pass it on.
            gather(per_replica.teacher_state) if self.teacher is not None else teacher_state,
        )
        return [total(g) for g in grads], result

    def _step_function(self, member, penalized):
        """The compiled meta step for family member ``member``: traced once per (member, penalized)."""
        key = (member, penalized)
        if key not in self._compiled:
            task, penalty = self.tasks[member], (self.penalty if penalized else None)

            def step(*args):
                grads, result = self._meta_gradient_fn(task, penalty, *args)
                return result, self._apply_if_finite(result.meta_loss, grads)

            self._compiled[key] = tf.function(step)
        return self._compiled[key]

    def _apply_if_finite(self, loss, grads):
        variables = self.rule.trainable_variables
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads] + [tf.math.is_finite(loss)])
        tf.cond(finite, lambda: self._apply(grads, variables), lambda: tf.no_op())
        return finite

    def _apply(self, grads, variables):
        self.meta_optimizer.apply_gradients(zip(grads, variables))
        return tf.no_op()

    def _step_args(self):
        return (list(self.params), self.state.value(), self.teacher_state.value(),
                tf.constant(self._seeds(), tf.int64), self.optimizee_step.value())

    def meta_gradient(self):
        """``(meta_loss, grads)`` of the next meta step, averaged over the batch; applies nothing.

        For checks: it is the all-reduced meta-gradient the next ``train``
        step would apply (before clipping).
        """
        task, penalty = self.tasks[self.member], (self.penalty if self._penalized() else None)
        grads, result = tf.function(lambda *args: self._meta_gradient_fn(task, penalty, *args))(*self._step_args())
        return result.meta_loss, grads

    def _run_fn(self, params, state, seed, num_steps):
        with kernels.native(self.config.unrolling.native_kernel):
            return unroll_lib.run(self.task, self.rule, params, state, seed, 0, num_steps)

    # -- bookkeeping -----------------------------------------------------------
    def _penalized(self):
        """Whether the next unroll carries the flatness penalty (``reg_start``, ``reg_trajectory_start``)."""
        return (self.penalty is not None and int(self.meta_step) >= self.config.penalty.reg_start
                and int(self.optimizee_step) >= self.config.penalty.reg_trajectory_start)

    @property
    def member(self):
        """The family member the current trajectory trains on."""
        return int(self.trajectory_index) % len(self.tasks)

    @property
    def trajectory_length(self):
        return self.config.schedule.curriculum[min(int(self.stage), len(self.config.schedule.curriculum) - 1)]

    def _seeds(self):
        """Seeds of the current trajectory's optimizees (with one optimizee: the trajectory index's)."""
        batch = self.config.distribution.optimizees
        return [seeds.training_optimizee(self.config.seed, int(self.trajectory_index) * batch + b) for b in range(batch)]

    def _new_optimizee(self):
        inits = [self.tasks[self.member].init_params(seed) for seed in self._seeds()]
        for j, variable in enumerate(self.params):
            variable.assign(tf.stack([init[j] for init in inits]))
        self.state.assign(self._stacked(self.rule.initial_state(self.num_coordinates)))
        if self.teacher is not None:
            self.teacher_state.assign(self._stacked(self.teacher.initial_state(self.num_coordinates)))
        self.optimizee_step.assign(0)

    def _prepare_out_dir(self):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "config.json")
        if os.path.exists(path):
            with open(path) as f:
                saved = MetaTrainConfig.from_dict(json.load(f)).flat()  # options it did not record: defaults
            mine = self.config.flat()
            different = sorted(k for k in mine if saved[k] != mine[k] and k not in MetaTrainConfig.RESUMABLE_CHANGES)
            if different:
                raise ValueError(
                    f"out_dir {self.out_dir!r} holds a run with a different config ({', '.join(different)}); "
                    "use a new --out_dir or the same flags to resume."
                )
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config.to_json())
        os.replace(tmp, path)

    def restore(self):
        """Resume from the latest checkpoint in ``out_dir``; returns whether one was found."""
        latest = self.manager.latest_checkpoint
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except Exception as e:  # TF raises OpError, AssertionError, IndexError... on bad files
                raise ValueError(
                    f"checkpoint {latest} is corrupt or does not match this run ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:160]}); delete it to resume from an earlier one, or use a new --out_dir."
                ) from None
            self._say(f"Resumed from {latest} at meta step {int(self.meta_step)}.")
        return bool(latest)

    def validate(self):
        """Mean training loss (its log with ``log_loss``) over the current trajectory length on held-out optimizee seeds."""
        values = []
        for i in range(self.config.schedule.validation_seeds):
            seed = seeds.VALIDATION + i
            _, _, losses = self._run(
                self.task.init_params(seed),
                self.rule.initial_state(self.num_coordinates),
                tf.constant(seed, tf.int64),
                tf.constant(self.trajectory_length),
            )
            values.append(float(tf.reduce_mean(self.unroll_config.scored(losses))))
        return float(np.mean(values))

    def _after_validation(self, value):
        """Curriculum: advance the trajectory length when validation stops improving."""
        if value < float(self.best_validation) * (1 - 1e-3):
            self.best_validation.assign(value)
            self.bad_validations.assign(0)
            return
        self.bad_validations.assign_add(1)
        if int(self.bad_validations) >= self.config.schedule.patience and int(self.stage) < len(self.config.schedule.curriculum) - 1:
            self.stage.assign_add(1)
            self.best_validation.assign(math.inf)
            self.bad_validations.assign(0)
            self.trajectory_index.assign_add(1)
            self._new_optimizee()
            self._say(f"Curriculum: trajectory length now {self.trajectory_length}.")

    # -- the loop ---------------------------------------------------------------
    def _say(self, message):
        """A line for the user: printed when training verbosely, else logged."""
        if self._verbose:
            print(message, flush=True)
        else:
            logging.info(message)

    def train(self, verbose=1):
        """Meta-train until ``config.meta_steps``; resumes from ``out_dir`` if it holds a run."""
        self._verbose = verbose
        self._prepare_out_dir()
        if not self.restore():
            self._new_optimizee()
        writer = tf.summary.create_file_writer(os.path.join(self.out_dir, "tensorboard"))
        progress = MetaTrainProgbar(
            self.config.meta_steps, verbose=verbose, unit_name="meta step",
            stateful_metrics=["meta_loss", "loss", "validation", "penalty"],
        )
        start_time, start_step = time.time(), int(self.meta_step)
        progress.start(start_step)
        next_validation = (start_step // self.config.schedule.validate_every + 1) * self.config.schedule.validate_every
        if next_validation > self.config.meta_steps:
            self._say(f"No validation in this run: it ends at meta step {self.config.meta_steps}, before the next "
                      f"validation (every {self.config.schedule.validate_every} meta steps: validate_every).")
        self._say(f"Meta-training from meta step {start_step} to {self.config.meta_steps} (the first step traces "
                  "and compiles the unroll) ...")
        while int(self.meta_step) < self.config.meta_steps:
            penalized = self._penalized()
            train_step = self._step_function(self.member, penalized)
            result, finite = train_step(*self._step_args())
            meta_loss = result.meta_loss
            losses = tf.reduce_mean(result.losses, axis=0)  # mean over the batch of optimizees
            self.meta_step.assign_add(1)
            if bool(finite):
                self.consecutive_skips.assign(0)
                for variable, value in zip(self.params, result.params):
                    variable.assign(value)
                self.state.assign(result.state)
                self.teacher_state.assign(result.teacher_state)
                self.optimizee_step.assign_add(self.config.unrolling.unroll)
                if int(self.optimizee_step) >= self.trajectory_length:
                    self.trajectory_index.assign_add(1)
                    self._new_optimizee()
            else:
                self.skips.assign_add(1)
                self.consecutive_skips.assign_add(1)
                logging.warning("Non-finite meta-loss or meta-gradient at meta step %d: skipped, optimizee reset.", int(self.meta_step))
                if int(self.consecutive_skips) >= self.config.max_consecutive_skips:
                    raise FloatingPointError(
                        f"{int(self.consecutive_skips)} consecutive non-finite unrolls: stopping. "
                        "Lower --meta_lr or --clipnorm, or shorten --unroll."
                    )
                self.trajectory_index.assign_add(1)
                self._new_optimizee()
            step = int(self.meta_step)
            values = [("meta_loss", float(meta_loss)), ("loss", float(losses[-1]))]
            counters = [("trajectory", self.trajectory_length), ("skipped", int(self.skips))]
            if penalized:
                values.append(("penalty", float(tf.reduce_mean(result.penalty))))
            with writer.as_default(step=step):
                tf.summary.scalar("meta_loss", meta_loss)
                tf.summary.scalar("optimizee/loss", losses[-1])
                tf.summary.scalar("curriculum/trajectory_length", self.trajectory_length)
                tf.summary.scalar("skipped_unrolls", int(self.skips))
                if penalized:
                    tf.summary.scalar(f"penalty/{self.config.penalty.regularizer}", tf.reduce_mean(result.penalty))
            if step % self.config.schedule.validate_every == 0:
                value = self.validate()
                self._after_validation(value)
                values.append(("validation", value))
                with writer.as_default(step=step):
                    tf.summary.scalar("validation/mean_loss", value)
            progress.update(step, values, counters)
            if step % self.config.checkpoint_every == 0 or step == self.config.meta_steps:
                self.save()
        writer.flush()
        elapsed = time.time() - start_time
        self._say(f"Meta-trained {int(self.meta_step) - start_step} steps in {elapsed:.1f} s.")
        return self.rule

    def save(self):
        """Checkpoint, then export the rule for ``l2o_tf.pretrained.load(out_dir)``."""
        self.manager.save(checkpoint_number=int(self.meta_step))
        from l2o_tf import pretrained  # noqa: PLC0415  (pretrained imports meta lazily too)

        pretrained.save_rule(self.rule, os.path.join(self.out_dir, "optimizer"))
