"""MetaTrainer: learn a rule's weights by truncated unrolls over a stream of fresh optimizees.

Everything a run needs to continue exactly lives in one ``tf.train.Checkpoint``
managed by ``tf.train.CheckpointManager``: rule weights, meta-optimizer slots,
the counters (meta step, trajectory index, optimizee step, curriculum stage,
validation best / patience) and the current optimizees' parameters and rule
state.  Optimizee seeds and batches are pure functions of those counters, so
no RNG state needs saving.  A family's trajectories either cycle through its
members (trajectory ``i`` trains member ``i mod n``) or, with ``every_member``,
every meta step unrolls a group of optimizees of each member and averages their
meta-gradients.
"""

import copy
import json
import math
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from l2o_tf import kernels, pretrained, rules, seeds, spec, tasks
from l2o_tf.meta import estimators
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.meta.config import MetaTrainConfig
from l2o_tf.meta.estimators import Problem
from l2o_tf.meta.optimizee_batch import OptimizeeBatch
from l2o_tf.meta.progress import MetaTrainProgbar
from l2o_tf.meta.replicas import ReplicaSplit


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
        self.tasks = self._tasks(config, task)
        self.task = self.tasks[0]
        validated = config.schedule.validation_seeds
        if validated < len(self.tasks):  # validate() takes the members in turn, one per held-out seed
            logging.warning(
                "Validation covers family members 0-%d of %d only (%s): validation_seeds=%d, one member per seed in "
                "turn; pass --validation_seeds=%d or more to validate on every member.", validated - 1,
                len(self.tasks), ", ".join(t.name for t in self.tasks[:validated]), validated, len(self.tasks))
        self._shapes = {}  # member -> its parameter shapes (members of the general family differ)
        with self.strategy.scope():  # rule weights and meta-optimizer slots are mirrored
            self.rule = rules.get(config.rule, seed=config.seed, **config.rule_kwargs)
            if not self.rule.trainable_weights:
                raise ValueError(f"rule {config.rule!r} has no weights to meta-train; use dmlstm or rnnprop.")
            self.meta_optimizer = keras.optimizers.Adam(config.meta_lr, global_clipnorm=config.clipnorm)
            self.meta_optimizer.build(self.rule.trainable_variables)
        self.config = config = self._resolve_native_kernel(config)
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
        # Optional Adam teacher whose updates the rule imitates (its state follows the optimizee).
        self.teacher = rules.Adam(learning_rate=config.imitation.imitation_lr) if config.imitation.imitation_weight > 0 else None
        self.estimator = estimators.get(config.estimation.estimator, self.rule, config.estimation.es_sigma,
                                        config.maml.maml_config())
        self.every_member = config.distribution.every_member
        groups = len(self.tasks) if self.every_member else 1
        self.group_size = self._group_size(config, groups, self.estimator.antithetic)
        # The optimizees of a meta step: one group (of the current member), or one per member with every_member.
        self.batches = [OptimizeeBatch(self.group_size, unroll_lib.flatten(self.tasks[g].init_params(0)), self.rule,
                                       self.teacher, self.estimator.state_size()) for g in range(groups)]

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
            params=self._checkpointed("params"),
            state=self._checkpointed("state"),
        )
        if self.teacher is not None:  # only runs with imitation carry a teacher state
            self.checkpoint.teacher_state = self._checkpointed("teacher_state")
        if self.estimator.state_size():
            self.checkpoint.estimator_state = self._checkpointed("estimator_state")
        if self.unroll_config.relative_loss:
            self.checkpoint.loss_scale = self._checkpointed("loss_scale")
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.path.join(out_dir, "checkpoints"), max_to_keep=3)
        self.penalty = config.penalty.penalty()
        # Each group's optimizees draw their own perturbations: the estimator numbers them across groups.
        self.replicas = [ReplicaSplit(
            self.strategy, self.estimator, self.group_size, config.unrolling.jit_compile, config.unrolling.native_kernel,
            carries_teacher=self.teacher is not None, carries_estimator_state=bool(self.estimator.state_size()),
            first_index=g * self.group_size,
        ) for g in range(groups)]
        self._problems, self._compiled = {}, {}
        self.validation_by_member = {}  # the last validation's mean per family member (TensorBoard)
        self._verbose = 0
        self._run = tf.function(self._run_fn)
        if config.unrolling.native_kernel:
            kernels.load()  # build it now: a missing compiler is reported here, not mid-trace

    @staticmethod
    def _tasks(config, task):
        """The tasks trajectories cycle through: trajectory ``i`` trains on member ``i mod len(tasks)``."""
        if isinstance(task, tasks.TaskFamily):
            return [build() for build in task.builders]
        if task is not None:
            return [task]
        unrolling, kwargs = config.unrolling, dict(config.task_kwargs)
        if unrolling.meta_objective != "train":
            kwargs["validation_examples"] = unrolling.validation_examples
        try:
            if config.task_family == ("general",):
                family = tasks.general.family(config.family_size, data_dir=kwargs.get("data_dir"),
                                              validation_examples=kwargs.get("validation_examples", 0))
            elif not config.task_family:
                return [tasks.get(config.task, **kwargs)]
            elif isinstance(config.task_family[0], str):  # named tasks
                family = tasks.named_family(config.task_family, **kwargs)
            else:  # a family over the shift knob sigma
                family = tasks.family(config.task, config.task_family, **kwargs)
            return [build() for build in family.builders]
        except TypeError as e:
            if "validation_examples" not in str(e):
                raise
            raise ValueError(f"--meta_objective={unrolling.meta_objective} needs a validation split held out of the "
                             f"task's training data, and task {config.task!r} has no training split (only Keras-model "
                             f"tasks do).") from None

    @staticmethod
    def _group_size(config, groups, antithetic):
        """Optimizees per group: ``optimizees`` split equally over the groups (antithetic pairs kept whole)."""
        batch = config.distribution.optimizees
        size = batch // groups
        if batch % groups or (antithetic and size % 2):
            pairs = " in antithetic pairs" if antithetic else ""
            raise ValueError(f"--every_member splits the {batch} optimizees of a meta step equally over the family's "
                             f"{groups} members{pairs}: pass --optimizees as a multiple of {groups * (2 if antithetic else 1)}.")
        return size

    def _checkpointed(self, field):
        """The groups' ``field`` variables as the checkpoint holds them: one variable for one group (as runs before
        every_member saved it), a list for several."""
        values = [getattr(batch, field) for batch in self.batches]
        return values[0] if len(values) == 1 else values

    @property
    def params(self):
        """The first group's stacked flat parameters (the only group, unless every_member)."""
        return self.batches[0].params

    @property
    def estimator_state(self):
        return self.batches[0].estimator_state

    @property
    def loss_scale(self):
        return self.batches[0].loss_scale

    def shapes(self, member):
        """The parameter shapes of family member ``member``."""
        if member not in self._shapes:
            self._shapes[member] = [p.shape for p in self.tasks[member].init_params(0)]
        return self._shapes[member]

    def num_coordinates(self, member):
        return sum(shape.num_elements() for shape in self.shapes(member))


    # -- compiled pieces --------------------------------------------------------
    def _problem(self, member, penalized, scored=True):
        """What the optimizees of family member ``member`` are unrolled on (one object per key: traced once)."""
        key = (member, penalized, scored)
        if key not in self._problems:
            teacher = None if self.teacher is None else (self.teacher, self.config.imitation.imitation_weight)
            self._problems[key] = Problem(self.tasks[member], self.unroll_config,
                                          self.penalty if penalized else None, teacher, scored)
        return self._problems[key]

    def _step_function(self, members, penalized, scored=True):
        """The compiled meta step over the groups of family members ``members`` (one int: one group): traced once
        per (members, penalized, scored).

        A step whose meta-loss has no term (before ``meta_loss_trajectory_start``, no penalty or imitation) applies
        nothing: a zero gradient would still move Adam's weights by its momentum and advance its bias correction.
        """
        members = (members,) if isinstance(members, int) else tuple(members)
        key = (members, penalized, scored)
        if key not in self._compiled:
            problems = [self._problem(member, penalized, scored) for member in members]

            def step(truncations, noise_seed):
                grads, results, estimator_states = self._group_gradients(problems, truncations, noise_seed)
                finite = self._finite(results, grads)
                if problems[0].trains:
                    tf.cond(finite, lambda: self._apply(grads, self.rule.trainable_variables), lambda: tf.no_op())
                return results, estimator_states, finite

            self._compiled[key] = tf.function(step)
        return self._compiled[key]

    def _group_gradients(self, problems, truncations, noise_seed):
        """``(grads, results, estimator_states)``: the meta-gradient averaged over every group's optimizees (equal
        groups: the mean of the group means), and each group's unroll results and estimator states."""
        grads, results, states = None, [], []
        for replicas, problem, truncation in zip(self.replicas, problems, truncations):
            group_grads, result, state = replicas.meta_gradient(problem, truncation, noise_seed)
            group_grads = [g / len(problems) for g in group_grads]
            grads = group_grads if grads is None else [a + g for a, g in zip(grads, group_grads)]
            results.append(result)
            states.append(state)
        return grads, results, states

    @staticmethod
    def _finite(results, grads):
        """Whether the unrolls stayed finite: their meta-losses, their optimizee losses (an unscored truncation's
        meta-loss is a constant 0 that would hide a diverged optimizee) and the meta-gradient."""
        values = grads + [v for result in results for v in (result.meta_loss, result.losses)]
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])

    def _apply(self, grads, variables):
        self.meta_optimizer.apply_gradients(zip(grads, variables))
        return tf.no_op()

    def _members(self):
        """The family member of each group this meta step: member ``trajectory mod n``, or every member."""
        return tuple(range(len(self.tasks))) if self.every_member else (self.member,)

    def _groups(self):
        """``(batch, member, optimizee seeds)`` of each group this meta step: the batch's seeds are its slice of
        :meth:`_seeds`, so a group's optimizees are the ones the cycling trainer would draw at those indices."""
        optimizee_seeds, size = self._seeds(), self.group_size
        return [(batch, member, optimizee_seeds[g * size:(g + 1) * size])
                for g, (batch, member) in enumerate(zip(self.batches, self._members()))]

    def _step_args(self):
        """The current groups as stacked :class:`Truncation` s, and this meta step's noise seed."""
        step = self.optimizee_step.value()
        truncations = [batch.truncation(self.shapes(member), group_seeds, step)
                       for batch, member, group_seeds in self._groups()]
        return truncations, tf.constant(seeds.estimator_noise(self.config.seed, int(self.meta_step)), tf.int64)

    def meta_gradient(self):
        """``(meta_loss, grads)`` of the next meta step, averaged over the batch; applies nothing.

        For checks: it is the all-reduced meta-gradient the next ``train``
        step would apply (before clipping).
        """
        problems = [self._problem(member, self._penalized(), self._scored()) for member in self._members()]
        grads, results, _ = tf.function(lambda *args: self._group_gradients(problems, *args))(*self._step_args())
        return tf.reduce_mean([result.meta_loss for result in results]), grads

    def _run_fn(self, task, params, state, seed, num_steps):
        with kernels.native(self.config.unrolling.native_kernel):
            return unroll_lib.run(task, self.rule, params, state, seed, 0, num_steps, objective=self.unroll_config)

    # -- bookkeeping -----------------------------------------------------------
    def _penalized(self):
        """Whether the next unroll carries the flatness penalty (``reg_start``, ``reg_trajectory_start``)."""
        return (self.penalty is not None and int(self.meta_step) >= self.config.penalty.reg_start
                and int(self.optimizee_step) >= self.config.penalty.reg_trajectory_start)

    def _scored(self):
        """Whether the next unroll's losses enter the meta-loss (``meta_loss_trajectory_start``)."""
        return int(self.optimizee_step) >= self.config.unrolling.meta_loss_trajectory_start

    @property
    def member(self):
        """The family member the current trajectory trains on."""
        return int(self.trajectory_index) % len(self.tasks)

    @property
    def trajectory_length(self):
        return self.config.schedule.curriculum[min(int(self.stage), len(self.config.schedule.curriculum) - 1)]

    def _seeds(self):
        """Seeds of the current trajectory's optimizees (with one optimizee: the trajectory index's).

        Antithetic estimators' pairs (``2k``, ``2k + 1``) share the seed of ``2k``.
        """
        batch, paired = self.config.distribution.optimizees, self.estimator.antithetic
        first = int(self.trajectory_index) * batch
        return [seeds.training_optimizee(self.config.seed, first + (b - b % 2 if paired else b)) for b in range(batch)]

    def _new_optimizee(self):
        """Fresh optimizees for the trajectory ``trajectory_index`` starts: each group's from its member."""
        for batch, member, group_seeds in self._groups():
            batch.reset(self.tasks[member], group_seeds, self.unroll_config.relative_loss)
        self.optimizee_step.assign(0)

    def _saved_config(self):
        """The config of the run ``out_dir`` holds (options it did not record: defaults), or None."""
        path = os.path.join(self.out_dir, "config.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return MetaTrainConfig.from_dict(json.load(f))

    def _resolve_native_kernel(self, config):
        """``native_kernel="auto"`` made a choice: the one the run in ``out_dir`` recorded (a resume stays exact on
        any machine), else the faster path here: the native stack kernel for a rule with an LSTM stack on a CPU-only
        machine (faster on AVX-512 and on AVX2: docs/benchmarks.md, benchmarks.meta_train_native_vs_tf) where
        nothing excludes it (XLA, second-order MAML) and it builds."""
        if config.unrolling.native_kernel != "auto":
            return config
        saved = self._saved_config()
        choice = saved.unrolling.native_kernel if saved is not None else "auto"
        if choice == "auto":
            maml = config.maml
            choice = bool(self.rule.NATIVE_STACK and not config.unrolling.jit_compile
                          and not (maml.maml_second_order and maml.maml_inner_steps)
                          and kernels.usable_here("MetaTrainer", "meta-training runs the rule's LSTM stack in "
                                                  "TensorFlow instead (--native_kernel=false silences this)"))
        config = copy.deepcopy(config)
        config.unrolling.native_kernel = choice
        return config

    def _prepare_out_dir(self):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "config.json")
        saved = self._saved_config()
        if saved is not None:
            saved = saved.flat()
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

    def _warm_start(self, name_or_dir):
        """Copy a trained rule's weights into this run's rule (a fresh run only: a resume restores its own)."""
        source = spec.rule_from_spec(name_or_dir)  # a spec such as out_dir:lr=0.25 starts from a rescaled step
        try:
            self.rule.warm_start_from(source)
        except ValueError as error:
            raise ValueError(f"--init_from={name_or_dir}: {error}") from None
        self._say(f"Rule weights initialised from {name_or_dir}.")

    def validate(self):
        """Mean loss over the current trajectory length on held-out optimizee seeds, scored as the meta-loss
        scores it (the validation split mixed in by ``meta_objective``, relative to the initial loss with
        ``relative_loss``, its log with ``log_loss``), from ``meta_loss_trajectory_start`` on."""
        values, by_member = [], {}
        for i in range(self.config.schedule.validation_seeds):
            seed, member = seeds.VALIDATION + i, i % len(self.tasks)  # a family: its members in turn
            _, _, losses = self._run(
                self.tasks[member],
                self.tasks[member].init_params(seed),
                self.rule.initial_state(self.num_coordinates(member)),
                tf.constant(seed, tf.int64),
                tf.constant(self.trajectory_length),
            )
            start = self.config.unrolling.meta_loss_trajectory_start
            values.append(float(tf.reduce_mean(self.unroll_config.scored(losses[start:], losses[0]))))
            by_member.setdefault(member, []).append(values[-1])
        self.validation_by_member = {member: float(np.mean(v)) for member, v in by_member.items()}
        return float(np.mean(values))

    def _after_validation(self, value):
        """Curriculum: advance the trajectory length when validation stops improving (by 0.1% of its size; a log
        loss's validation is negative). An improvement also exports the rule to ``out_dir/best``."""
        best = float(self.best_validation)
        if math.isinf(best) or value < best - 1e-3 * abs(best):
            self.best_validation.assign(value)
            self.bad_validations.assign(0)
            self._save_best(value)
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
            if self.config.init_from:
                self._warm_start(self.config.init_from)
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
            penalized, scored, members = self._penalized(), self._scored(), self._members()
            train_step = self._step_function(members, penalized, scored)
            trains = self._problem(members[0], penalized, scored).trains
            results, estimator_states, finite = train_step(*self._step_args())
            meta_loss = tf.reduce_mean([result.meta_loss for result in results])  # equal groups: the batch mean
            # mean over the batch of optimizees
            losses = tf.reduce_mean(tf.concat([result.losses for result in results], axis=0), axis=0)
            penalty = tf.reduce_mean(tf.concat([result.penalty for result in results], axis=0))
            self.meta_step.assign_add(1)
            if bool(finite):
                self.consecutive_skips.assign(0)
                for batch, result, estimator_state in zip(self.batches, results, estimator_states):
                    batch.carry(result, estimator_state)
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
            # An unscored truncation's meta-loss is 0 by construction, not progress: it is not logged.
            values = [("meta_loss", float(meta_loss))] if trains else []
            values.append(("loss", float(losses[-1])))
            counters = [("trajectory", self.trajectory_length), ("skipped", int(self.skips))]
            if penalized:
                values.append(("penalty", float(penalty)))
            with writer.as_default(step=step):
                if trains:
                    tf.summary.scalar("meta_loss", meta_loss)
                    if len(self.tasks) > 1:  # which member moves, or breaks, the rule
                        for member, result in zip(members, results):
                            tf.summary.scalar(f"meta_loss/{self._member_tag(member)}", result.meta_loss)
                tf.summary.scalar("optimizee/loss", losses[-1])
                tf.summary.scalar("curriculum/trajectory_length", self.trajectory_length)
                tf.summary.scalar("skipped_unrolls", int(self.skips))
                if penalized:
                    tf.summary.scalar(f"penalty/{self.config.penalty.regularizer}", penalty)
            if step % self.config.schedule.validate_every == 0:
                value = self.validate()
                self._after_validation(value)
                values.append(("validation", value))
                with writer.as_default(step=step):
                    tf.summary.scalar("validation/mean_loss", value)
                    if len(self.tasks) > 1:
                        for member, member_value in self.validation_by_member.items():
                            tf.summary.scalar(f"validation/{self._member_tag(member)}", member_value)
            progress.update(step, values, counters)
            if step % self.config.checkpoint_every == 0 or step == self.config.meta_steps:
                self.save()
        writer.flush()
        elapsed = time.time() - start_time
        self._say(f"Meta-trained {int(self.meta_step) - start_step} steps in {elapsed:.1f} s.")
        return self.rule

    def _member_tag(self, member):
        """A TensorBoard tag for family member ``member``: its index and name."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"member{member}_{self.tasks[member].name}")

    def _save_best(self, value):
        """The rule at the best validation of the current trajectory length, for ``l2o_tf.pretrained.load(out_dir +
        "/best")``: meta-training can end on worse weights than it passed (a family's members pull in turns)."""
        pretrained.save_validation_best(self.rule, self.out_dir, self.meta_step, value, self.trajectory_length)

    def save(self):
        """Checkpoint, then export the rule for ``l2o_tf.pretrained.load(out_dir)``."""
        self.manager.save(checkpoint_number=int(self.meta_step))
        pretrained.save_rule(self.rule, os.path.join(self.out_dir, "optimizer"))
