"""MetaTrainer: learn a rule's weights by truncated unrolls over a stream of fresh optimizees.

Everything a run needs to continue exactly lives in one ``tf.train.Checkpoint``
managed by ``tf.train.CheckpointManager``: rule weights, meta-optimizer slots,
the counters (meta step, trajectory index, optimizee step, curriculum stage,
validation best / patience) and the current optimizee's parameters and rule
state.  Optimizee seeds and batches are pure functions of those counters, so
no RNG state needs saving.
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from l2o_tf import kernels, rules, tasks
from l2o_tf.meta import adaptation, regularizers
from l2o_tf.meta import unroll as unroll_lib

VALIDATION_SEED_OFFSET = 10**9
RESUMABLE_CHANGES = ("meta_steps", "checkpoint_every", "recompute")


@dataclasses.dataclass
class MetaTrainConfig:
    """A meta-training run; serialised to ``config.json`` beside its checkpoints."""

    task: str = "mnist_mlp"
    task_kwargs: dict = dataclasses.field(default_factory=dict)
    rule: str = "rnnprop"
    rule_kwargs: dict = dataclasses.field(default_factory=dict)
    unroll: int = 20
    curriculum: tuple = (100,)
    patience: int = 3
    validate_every: int = 200
    validation_seeds: int = 2
    meta_steps: int = 1000
    meta_lr: float = 1e-3
    clipnorm: float = 1.0
    second_order: bool = False
    loss_weights: str = "uniform"
    log_loss: bool = False
    seed: int = 0
    checkpoint_every: int = 100
    max_consecutive_skips: int = 20
    imitation_weight: float = 0.0
    imitation_lr: float = 1e-2
    regularizer: str = "none"
    reg_weight: float = 1e-4
    reg_every: int = 1
    reg_start: int = 0
    # Optimizee step within each trajectory from which the penalty is on: the flatness of where
    # a trajectory ends is what the penalty is for, and penalising its first steps slows them.
    reg_trajectory_start: int = 0
    reg_num_probes: int = 1
    reg_num_iters: int = 10
    reg_gamma: float = 1.0
    reg_sgld_steps: int = 10
    task_family: tuple = ()
    maml_inner_steps: int = 0
    maml_inner_lr: float = 1e-3
    maml_second_order: bool = False
    maml_inner_optimizer: str = "sgd"
    optimizees: int = 1
    # XLA-compile each optimizee's unroll and meta-gradient.  XLA's stateless random ops draw
    # other numbers than TF's kernels for the same seed, so this is a different (equally
    # deterministic) run: it belongs to the config.
    jit_compile: bool = False
    # Recompute the rule's activations in the backward pass (tf.recompute_grad): less memory, same result.
    recompute: bool = False
    # Run the rule's LSTM stack, forward and backward, with l2o_tf's native fused CPU kernels
    # (l2o_tf.kernels): the fastest CPU meta step.  Equal to the TF step to float rounding, so
    # like jit_compile it belongs to the config; the two exclude each other (XLA cannot compile
    # a custom op), and the kernels' gradient has no gradient itself (no maml_second_order).
    native_kernel: bool = False

    def __post_init__(self):
        self.curriculum = tuple(int(t) for t in self.curriculum)
        self.task_family = tuple(float(s) for s in self.task_family)
        checks = [
            (self.unroll >= 1, f"unroll must be >= 1, got {self.unroll}"),
            (len(self.curriculum) >= 1, "curriculum needs at least one trajectory length"),
            (all(t >= self.unroll for t in self.curriculum),
             f"every trajectory length {list(self.curriculum)} must be >= the unroll ({self.unroll})"),
            (all(t % self.unroll == 0 for t in self.curriculum),
             f"every trajectory length {list(self.curriculum)} must be a multiple of the unroll ({self.unroll})"),
            (self.optimizees >= 1, f"optimizees must be >= 1, got {self.optimizees}"),
            (self.meta_steps >= 1, f"meta_steps must be >= 1, got {self.meta_steps}"),
            (self.meta_lr > 0, f"meta_lr must be > 0, got {self.meta_lr}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (self.validate_every >= 1, f"validate_every must be >= 1, got {self.validate_every}"),
            (self.validation_seeds >= 1, f"validation_seeds must be >= 1, got {self.validation_seeds}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.imitation_weight >= 0, f"imitation_weight must be >= 0, got {self.imitation_weight}"),
            (self.reg_start >= 0 and self.reg_trajectory_start >= 0,
             f"reg_start and reg_trajectory_start must be >= 0, got {self.reg_start}, {self.reg_trajectory_start}"),
            (self.reg_trajectory_start % self.unroll == 0,
             f"reg_trajectory_start ({self.reg_trajectory_start}) must be a multiple of the unroll ({self.unroll})"),
            (self.maml_inner_steps >= 0, f"maml_inner_steps must be >= 0, got {self.maml_inner_steps}"),
            (self.maml_inner_steps == 0 or (self.regularizer == "none" and self.imitation_weight == 0),
             "MAML meta-training does not combine with a regularizer or imitation"),
            (not (self.native_kernel and self.jit_compile),
             "native_kernel runs custom ops that XLA cannot compile: pass jit_compile or native_kernel, not both"),
            (not (self.native_kernel and self.maml_second_order and self.maml_inner_steps),
             "native_kernel has no second derivative: it does not combine with maml_second_order"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")
        self.unroll_config()
        self.penalty()
        self.maml_config()

    def unroll_config(self):
        return unroll_lib.UnrollConfig(self.unroll, self.second_order, self.loss_weights, self.recompute, self.log_loss)

    def maml_config(self):
        """M-L2O's inner loop, or None for vanilla meta-training."""
        if not self.maml_inner_steps:
            return None
        return adaptation.MAMLConfig(
            self.maml_inner_steps, self.maml_inner_lr, self.maml_second_order, self.maml_inner_optimizer)

    def penalty(self):
        """The configured flatness penalty, or None."""
        if self.regularizer == "none":
            return None
        options = {
            "hessian_trace": {"num_probes": self.reg_num_probes},
            "hessian_eig": {"num_iters": self.reg_num_iters},
            "local_entropy": {"gamma": self.reg_gamma, "num_steps": self.reg_sgld_steps},
        }.get(self.regularizer, {})
        return regularizers.Penalty(self.regularizer, self.reg_weight, self.reg_every, tuple(sorted(options.items())))

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def optimizee_seed(run_seed, trajectory_index):
    """The seed of the ``trajectory_index``-th training optimizee of run ``run_seed``."""
    return int(run_seed) * 1_000_003 + int(trajectory_index)


class MetaTrainer:
    """Meta-trains ``config.rule`` on ``config.task``; ``out_dir`` holds checkpoints, config and logs.

    ``strategy``: a ``tf.distribute.Strategy`` (default: the current one); its
    replicas share the ``config.optimizees`` optimizees of each meta step.
    The strategy does not change what is learned, so it is not part of the config.
    """

    def __init__(self, config, out_dir, task=None, strategy=None):
        self.config = config
        self.out_dir = out_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if config.optimizees % replicas:
            raise ValueError(
                f"optimizees ({config.optimizees}) must be a multiple of the strategy's {replicas} replicas."
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
        self.unroll_config = config.unroll_config()

        counter = lambda value=0: tf.Variable(value, dtype=tf.int64, trainable=False)  # noqa: E731
        self.meta_step = counter()
        self.trajectory_index = counter()
        self.optimizee_step = counter()
        self.stage = counter()
        self.skips = counter()
        self.consecutive_skips = counter()
        self.bad_validations = counter()
        self.best_validation = tf.Variable(math.inf, dtype=tf.float32, trainable=False)
        batch = config.optimizees
        initial = self.task.init_params(0)
        # The optimizees of a meta step, stacked on a leading axis of size ``optimizees``.
        self.params = [tf.Variable(tf.stack([p] * batch), trainable=False) for p in initial]
        self.num_coordinates = sum(p.shape.num_elements() for p in initial)
        self.state = tf.Variable(self._stacked(self.rule.initial_state(self.num_coordinates)), trainable=False)
        # Optional Adam teacher whose updates the rule imitates (its state follows the optimizee).
        self.teacher = rules.Adam(learning_rate=config.imitation_lr) if config.imitation_weight > 0 else None
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
        self.penalty = config.penalty()
        self.maml = config.maml_config()
        self._compiled = {}
        self._run = tf.function(self._run_fn)
        self._one = tf.function(self._one_optimizee, jit_compile=True) if config.jit_compile else self._one_optimizee
        if config.native_kernel:
            kernels.load()  # build it now: a missing compiler is reported here, not mid-trace

    def _stacked(self, value):
        return tf.stack([value] * self.config.optimizees)

    # -- compiled pieces --------------------------------------------------------
    def _one_optimizee(self, task, penalty, params, state, teacher_state, seed, start_step):
        """Meta-loss, meta-gradient and unroll result for one optimizee's truncation."""
        with kernels.native(self.config.native_kernel):
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
            teacher = None if self.teacher is None else (self.teacher, teacher_state, self.config.imitation_weight)
            with tf.GradientTape() as tape:
                result = unroll_lib.unroll(task, self.rule, params, state, seed, start_step, self.unroll_config, teacher, penalty)
            loss, grads = result.meta_loss, tape.gradient(result.meta_loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        if result.teacher_state is None:
            result = result._replace(teacher_state=teacher_state)
        return loss, grads, result

    def _replica_meta_gradient(self, task, penalty, params, state, teacher_state, seeds, start_step):
        """This replica's share of the batch: sums of meta-losses and meta-gradients over ``optimizees``."""
        batch = self.config.optimizees
        local = batch // self.strategy.num_replicas_in_sync
        first = tf.distribute.get_replica_context().replica_id_in_sync_group * local
        loss_sum, grad_sum, results = 0.0, None, []
        for b in range(local):
            i = first + b
            loss, grads, result = self._one(
                task, penalty, [p[i] for p in params], state[i], teacher_state[i], seeds[i], start_step
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

    def _meta_gradient_fn(self, task, penalty, params, state, teacher_state, seeds, start_step):
        """All-reduced mean meta-gradient over the batch, and the batch's unroll results gathered."""
        grads, per_replica = self.strategy.run(
            lambda *args: self._replica_meta_gradient(task, penalty, *args),
            args=(params, state, teacher_state, seeds, start_step),
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
        with kernels.native(self.config.native_kernel):
            return unroll_lib.run(self.task, self.rule, params, state, seed, 0, num_steps)

    # -- bookkeeping -----------------------------------------------------------
    def _penalized(self):
        """Whether the next unroll carries the flatness penalty (``reg_start``, ``reg_trajectory_start``)."""
        return (self.penalty is not None and int(self.meta_step) >= self.config.reg_start
                and int(self.optimizee_step) >= self.config.reg_trajectory_start)

    @property
    def member(self):
        """The family member the current trajectory trains on."""
        return int(self.trajectory_index) % len(self.tasks)

    @property
    def trajectory_length(self):
        return self.config.curriculum[min(int(self.stage), len(self.config.curriculum) - 1)]

    def _seeds(self):
        """Seeds of the current trajectory's optimizees (with one optimizee: the trajectory index's)."""
        batch = self.config.optimizees
        return [optimizee_seed(self.config.seed, int(self.trajectory_index) * batch + b) for b in range(batch)]

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
                saved = json.load(f)
            mine = json.loads(self.config.to_json())
            # Keys an older run did not record hold their defaults.
            saved = {**json.loads(MetaTrainConfig().to_json()), **saved}
            different = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k) and k not in RESUMABLE_CHANGES)
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
            logging.info("Resumed from %s at meta step %d.", latest, int(self.meta_step))
        return bool(latest)

    def validate(self):
        """Mean training loss (its log with ``log_loss``) over the current trajectory length on held-out optimizee seeds."""
        values = []
        for i in range(self.config.validation_seeds):
            seed = VALIDATION_SEED_OFFSET + i
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
        if int(self.bad_validations) >= self.config.patience and int(self.stage) < len(self.config.curriculum) - 1:
            self.stage.assign_add(1)
            self.best_validation.assign(math.inf)
            self.bad_validations.assign(0)
            self.trajectory_index.assign_add(1)
            self._new_optimizee()
            logging.info("Curriculum: trajectory length now %d.", self.trajectory_length)

    # -- the loop ---------------------------------------------------------------
    def train(self, verbose=1):
        """Meta-train until ``config.meta_steps``; resumes from ``out_dir`` if it holds a run."""
        self._prepare_out_dir()
        if not self.restore():
            self._new_optimizee()
        writer = tf.summary.create_file_writer(os.path.join(self.out_dir, "tensorboard"))
        progress = keras.utils.Progbar(
            self.config.meta_steps, verbose=verbose,
            stateful_metrics=["meta_loss", "loss", "trajectory", "skipped", "validation", "penalty"],
        )
        progress.update(int(self.meta_step))
        start_time, start_step = time.time(), int(self.meta_step)
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
                self.optimizee_step.assign_add(self.config.unroll)
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
            values = [("meta_loss", float(meta_loss)), ("loss", float(losses[-1])),
                      ("trajectory", self.trajectory_length), ("skipped", int(self.skips))]
            if penalized:
                values.append(("penalty", float(tf.reduce_mean(result.penalty))))
            with writer.as_default(step=step):
                tf.summary.scalar("meta_loss", meta_loss)
                tf.summary.scalar("optimizee/loss", losses[-1])
                tf.summary.scalar("curriculum/trajectory_length", self.trajectory_length)
                tf.summary.scalar("skipped_unrolls", int(self.skips))
                if penalized:
                    tf.summary.scalar(f"penalty/{self.config.regularizer}", tf.reduce_mean(result.penalty))
            if step % self.config.validate_every == 0:
                value = self.validate()
                self._after_validation(value)
                values.append(("validation", value))
                with writer.as_default(step=step):
                    tf.summary.scalar("validation/mean_loss", value)
            progress.update(step, values)
            if step % self.config.checkpoint_every == 0 or step == self.config.meta_steps:
                self.save()
        writer.flush()
        elapsed = time.time() - start_time
        logging.info("Meta-trained %d steps in %.1f s.", int(self.meta_step) - start_step, elapsed)
        return self.rule

    def save(self):
        """Checkpoint, then export the rule for ``l2o_tf.pretrained.load(out_dir)``."""
        self.manager.save(checkpoint_number=int(self.meta_step))
        from l2o_tf import pretrained  # noqa: PLC0415  (pretrained imports meta lazily too)

        pretrained.save_rule(self.rule, os.path.join(self.out_dir, "optimizer"))
