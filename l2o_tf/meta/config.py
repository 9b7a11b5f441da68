"""MetaTrainConfig: one meta-training run, nested by concern, each option written once.

Every option is a dataclass field with its help text (and, for closed sets, its choices)
in the field's metadata: ``train.meta_train`` generates its absl flags from these fields,
and ``config.json`` beside a run's checkpoints is the nested ``to_json()``.  Option names
are unique across the groups, so a flat ``{name: value}`` (flags, older flat config.json
files) maps onto the nesting with :meth:`MetaTrainConfig.from_flat`.
"""

import dataclasses
import json

from l2o_tf import tasks
from l2o_tf.meta import adaptation, estimators, regularizers
from l2o_tf.meta import unroll as unroll_lib


def option(default, help, choices=None, item=None):  # noqa: A002  (the flag's help)
    """A config field: its default, its help text, its choices, and for tuples the item type."""
    metadata = {"help": help, "choices": choices, "item": item}
    if isinstance(default, (tuple, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class UnrollOptions:
    """How one truncation is unrolled, scored and executed."""

    unroll: int = option(20, "Optimizee steps per truncated unroll (one meta-gradient).")
    second_order: bool = option(False, "Keep second derivatives through the optimizee gradient.")
    loss_weights: str = option("uniform", "Weights of the losses in the meta-loss.", choices=("uniform", "increasing"))
    log_loss: bool = option(False, "Meta-loss on log f_t: every decade of progress counts (LASSO, quadratics; needs f > 0).")
    relative_loss: bool = option(False, "Meta-loss on f_t / f_0, the loss relative to the optimizee's initial loss: "
                                 "tasks whose losses differ by orders of magnitude weigh alike (task families).")
    meta_objective: str = option("train", "What the meta-loss scores at the unrolled parameters: the training batches' loss, "
                                 "the loss on validation batches held out of the task's training split (never its test "
                                 "split; Metz et al. 2019), or a mix (--validation_weight).",
                                 choices=("train", "validation", "mix"))
    validation_weight: float = option(0.5, "meta_objective=mix: the validation loss's share of the meta-objective.")
    # Evaluations read where a trajectory ends; a loss averaged over the whole trajectory also rewards fitting fast.
    meta_loss_trajectory_start: int = option(0, "Optimizee step of each trajectory from which its losses enter the "
                                             "meta-loss (a multiple of --unroll, below the shortest trajectory): score "
                                             "where trajectories end, as an evaluation reads them.  Earlier truncations "
                                             "only carry the optimizees on (no meta-update unless a penalty or imitation "
                                             "applies); with --estimator=pes their perturbations are credited with the "
                                             "losses they cause later.")
    validation_examples: int = option(5000, "meta_objective validation/mix: training examples held out as the "
                                      "validation split (the last ones of the train split).")
    # Recompute the rule's activations in the backward pass (tf.recompute_grad): less memory, same result.
    recompute: bool = option(False, "Recompute the rule's activations in the backward pass: less memory for long unrolls.")
    # XLA's stateless random ops draw other numbers than TF's kernels for the same seed, so an XLA
    # run is a different (equally deterministic) run: it belongs to the config.
    jit_compile: bool = option(False, "Compile the unrolls with XLA (its random batches differ from the non-XLA run's).")
    # Equal to the TF step to float rounding, so like jit_compile it belongs to the config: a run
    # records what "auto" chose (MetaTrainer) and a resume keeps it.
    native_kernel: object = option("auto", "Run the rule's LSTM stack (forward and backward) with l2o_tf's native fused "
                                   "CPU kernels (needs a C++ compiler; excludes --jit_compile).  auto: where it is the "
                                   "faster path, that is for a rule with an LSTM stack (dmlstm, rnnprop) on a CPU-only "
                                   "machine without --jit_compile or --maml_second_order, if the kernels build; the "
                                   "run's config.json records the choice and a resume keeps it.",
                                   choices=("auto", "true", "false"))

    @property
    def objective_validation_weight(self):
        """The validation loss's share of the meta-objective (0 for ``train``)."""
        return {"train": 0.0, "validation": 1.0}.get(self.meta_objective, self.validation_weight)

    def unroll_config(self):
        if self.meta_objective == "mix" and not 0.0 < self.validation_weight < 1.0:
            raise ValueError(f"meta_objective=mix needs 0 < validation_weight < 1, got {self.validation_weight}.")
        if self.meta_objective != "train" and self.validation_examples < 1:
            raise ValueError(f"meta_objective={self.meta_objective} needs validation_examples >= 1, "
                             f"got {self.validation_examples}.")
        return unroll_lib.UnrollConfig(self.unroll, self.second_order, self.loss_weights, self.recompute, self.log_loss,
                                       self.relative_loss, self.objective_validation_weight)


@dataclasses.dataclass
class CurriculumOptions:
    """Trajectory lengths, and the validation that advances them."""

    curriculum: tuple = option((100,), "Trajectory lengths (optimizee steps before a fresh optimizee), advanced "
                               "when validation stops improving, e.g. 100,200,500,1000.", item=int)
    patience: int = option(3, "Validations without improvement before the curriculum advances.")
    validate_every: int = option(200, "Meta steps between validations.")
    validation_seeds: int = option(2, "Held-out optimizees per validation; a family's members in turn, one per seed.")


@dataclasses.dataclass
class PenaltyOptions:
    """The flatness penalty added to the meta-loss: alpha * sum_t R_t."""

    regularizer: str = option("none", "Flatness penalty added to the meta-loss (alpha * sum_t R_t).",
                              choices=("none",) + tuple(sorted(regularizers.PENALTIES)))
    reg_weight: float = option(1e-4, "alpha: weight of the flatness penalty.")
    reg_every: int = option(1, "Apply the penalty every k-th step of each unroll.")
    reg_start: int = option(0, "Meta step from which the penalty is on.")
    # The flatness of where a trajectory ends is what the penalty is for; penalising its first steps slows them.
    reg_trajectory_start: int = option(0, "Optimizee step of each trajectory from which the penalty is on "
                                       "(a multiple of --unroll): penalise where trajectories end, not their first steps.")
    reg_num_probes: int = option(1, "hessian_trace, adaptive_trace: Rademacher probes.")
    reg_eta: float = option(0.01, "adaptive_trace: eta in T = |w| + eta (keeps zero weights in the measure).")
    reg_num_iters: int = option(10, "hessian_eig: power iterations.")
    reg_gamma: float = option(1.0, "local_entropy: coupling gamma.")
    reg_sgld_steps: int = option(10, "local_entropy: SGLD steps per estimate.")

    def penalty(self):
        """The configured penalty, or None."""
        if self.regularizer == "none":
            return None
        options = {
            "hessian_trace": {"num_probes": self.reg_num_probes},
            "adaptive_trace": {"num_probes": self.reg_num_probes, "eta": self.reg_eta},
            "hessian_eig": {"num_iters": self.reg_num_iters},
            "local_entropy": {"gamma": self.reg_gamma, "num_steps": self.reg_sgld_steps},
        }.get(self.regularizer, {})
        return regularizers.Penalty(self.regularizer, self.reg_weight, self.reg_every, tuple(sorted(options.items())))


@dataclasses.dataclass
class ImitationOptions:
    """Imitation of an Adam teacher's updates, added to the meta-loss."""

    imitation_weight: float = option(0.0, "Weight of imitating an Adam teacher's updates (0: off).")
    imitation_lr: float = option(1e-2, "Learning rate of the Adam teacher.")


@dataclasses.dataclass
class EstimatorOptions:
    """How the meta-gradient of each truncation is estimated (l2o_tf.meta.estimators)."""

    estimator: str = option("truncated", "Meta-gradient estimator: truncated backprop, pes (persistent ES, unbiased over "
                            "whole trajectories), es (antithetic ES), maml (M-L2O; --maml_* options).",
                            choices=estimators.NAMES)
    es_sigma: float = option(0.01, "es/pes: standard deviation of the perturbation of the rule weights.")


@dataclasses.dataclass
class MAMLOptions:
    """M-L2O: MAML's inner adaptation of the rule weights within each meta step."""

    maml_inner_steps: int = option(0, "M-L2O: inner steps on the rule weights per meta step (> 0 selects the maml "
                                   "estimator; --estimator=maml alone takes 1).")
    maml_inner_lr: float = option(1e-3, "M-L2O: inner learning rate (of --maml_inner_optimizer).")
    maml_second_order: bool = option(False, "M-L2O: differentiate through the inner step.")
    maml_inner_optimizer: str = option("sgd", "M-L2O: inner optimizer; adam matches the test-time adaptation "
                                       "(train.adapt).", choices=("sgd", "adam"))

    def maml_config(self):
        """M-L2O's inner loop, or None for vanilla meta-training."""
        if not self.maml_inner_steps:
            return None
        return adaptation.MAMLConfig(self.maml_inner_steps, self.maml_inner_lr, self.maml_second_order,
                                     self.maml_inner_optimizer)


@dataclasses.dataclass
class DistributionOptions:
    """What a meta step averages over; the tf.distribute strategy splits it (and is not config)."""

    optimizees: int = option(1, "Optimizees unrolled per meta step (the global batch, split over replicas).")
    # Cycling, one member pulls the rule for a whole trajectory, then the next pulls it back (round 5's family arms).
    every_member: bool = option(False, "Task family: split each meta step's optimizees equally over every member, so "
                                "each meta-gradient averages all members (--optimizees a multiple of the family's "
                                "size, twice it for es/pes), instead of trajectory i training member i mod n.")


GROUPS = {"unrolling": UnrollOptions, "schedule": CurriculumOptions, "penalty": PenaltyOptions,
          "imitation": ImitationOptions, "estimation": EstimatorOptions, "maml": MAMLOptions,
          "distribution": DistributionOptions}


@dataclasses.dataclass
class MetaTrainConfig:
    """A meta-training run; serialised to ``config.json`` beside its checkpoints."""

    task: str = option("mnist_mlp", "Optimizee task name (l2o_tf.tasks.names()).")
    task_kwargs: dict = option({}, "Task arguments as key=value, e.g. sigma=0.5,dim=10.")
    task_family: tuple = option((), "Train over a family: 'general' (l2o_tf.tasks.general: MLPs, conv nets, autoencoders, "
                                "char-RNNs and transformer LMs, augmented; --task is ignored), the task with sigma in "
                                "this list (e.g. 0.1,0.5,1), or these named tasks with --task_kwargs (e.g. "
                                "mnist_mlp,mnist_mlp_tanh; --task is ignored).", item=str)
    family_size: int = option(16, "general family: how many sampled tasks it cycles through (seeds 0 ... n-1).")
    rule: str = option("rnnprop", "Rule to meta-train (l2o_tf.rules.names() with weights: dmlstm, rnnprop).")
    rule_kwargs: dict = option({}, "Rule arguments as key=value, e.g. output_scale=0.1.")
    seed: int = option(0, "Run seed: rule initialisation and optimizee seeds.")
    init_from: str = option("", "Start the rule's weights from a trained optimizer (a pretrained name or an out_dir; "
                            "NAME:lr=X with its step scaled by X) instead of the seed's initialisation; its rule must "
                            "be the one --rule and --rule_kwargs build (or, for --rule=hierarchical, an AdafacMLP "
                            "of the same MLP config, grown with a silent context).  Fine-tuning studies start every arm from the "
                            "same weights this way.")
    meta_steps: int = option(1000, "Total meta steps (truncations).")
    meta_lr: float = option(1e-3, "Adam learning rate of the meta-optimizer.")
    clipnorm: float = option(1.0, "Global-norm clip of the meta-gradient.")
    checkpoint_every: int = option(100, "Meta steps between checkpoints.")
    max_consecutive_skips: int = option(20, "Non-finite unrolls in a row before the run stops.")
    unrolling: UnrollOptions = dataclasses.field(default_factory=UnrollOptions)
    schedule: CurriculumOptions = dataclasses.field(default_factory=CurriculumOptions)
    penalty: PenaltyOptions = dataclasses.field(default_factory=PenaltyOptions)
    imitation: ImitationOptions = dataclasses.field(default_factory=ImitationOptions)
    estimation: EstimatorOptions = dataclasses.field(default_factory=EstimatorOptions)
    maml: MAMLOptions = dataclasses.field(default_factory=MAMLOptions)
    distribution: DistributionOptions = dataclasses.field(default_factory=DistributionOptions)

    # Options that may change when a run is resumed (they do not change what is learned).
    RESUMABLE_CHANGES = ("meta_steps", "checkpoint_every", "recompute")

    def __post_init__(self):
        for name, cls in GROUPS.items():
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        schedule, unrolling, penalty, maml = self.schedule, self.unrolling, self.penalty, self.maml
        estimation = self.estimation
        # M-L2O was a mode (maml_inner_steps > 0) before it was an estimator: both spellings select it.
        if maml.maml_inner_steps > 0 and estimation.estimator == "truncated":
            estimation.estimator = "maml"
        if estimation.estimator == "maml" and maml.maml_inner_steps == 0:
            maml.maml_inner_steps = 1
        antithetic = estimation.estimator in ("es", "pes")
        unrolling.native_kernel = {"true": True, "false": False}.get(unrolling.native_kernel, unrolling.native_kernel)
        schedule.curriculum = tuple(int(t) for t in schedule.curriculum)
        self.task_family = self._task_family(self.task_family)
        unroll = unrolling.unroll
        checks = [
            (unroll >= 1, f"unroll must be >= 1, got {unroll}"),
            (len(schedule.curriculum) >= 1, "curriculum needs at least one trajectory length"),
            (all(t >= unroll for t in schedule.curriculum),
             f"every trajectory length {list(schedule.curriculum)} must be >= the unroll ({unroll})"),
            (all(t % unroll == 0 for t in schedule.curriculum),
             f"every trajectory length {list(schedule.curriculum)} must be a multiple of the unroll ({unroll})"),
            (self.family_size >= 1, f"family_size must be >= 1, got {self.family_size}"),
            (self.distribution.optimizees >= 1, f"optimizees must be >= 1, got {self.distribution.optimizees}"),
            (self.meta_steps >= 1, f"meta_steps must be >= 1, got {self.meta_steps}"),
            (self.meta_lr > 0, f"meta_lr must be > 0, got {self.meta_lr}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (schedule.validate_every >= 1, f"validate_every must be >= 1, got {schedule.validate_every}"),
            (schedule.validation_seeds >= 1, f"validation_seeds must be >= 1, got {schedule.validation_seeds}"),
            (schedule.patience >= 1, f"patience must be >= 1, got {schedule.patience}"),
            (self.imitation.imitation_weight >= 0, f"imitation_weight must be >= 0, got {self.imitation.imitation_weight}"),
            (penalty.reg_start >= 0 and penalty.reg_trajectory_start >= 0,
             f"reg_start and reg_trajectory_start must be >= 0, got {penalty.reg_start}, {penalty.reg_trajectory_start}"),
            (penalty.reg_trajectory_start % unroll == 0,
             f"reg_trajectory_start ({penalty.reg_trajectory_start}) must be a multiple of the unroll ({unroll})"),
            (unrolling.meta_loss_trajectory_start >= 0 and unrolling.meta_loss_trajectory_start % unroll == 0,
             f"meta_loss_trajectory_start ({unrolling.meta_loss_trajectory_start}) must be a multiple of the unroll "
             f"({unroll}), >= 0"),
            (unrolling.meta_loss_trajectory_start < min(schedule.curriculum),
             f"meta_loss_trajectory_start ({unrolling.meta_loss_trajectory_start}) must be below the shortest trajectory "
             f"({min(schedule.curriculum)}), or no loss is ever scored"),
            (estimation.estimator != "maml" or unrolling.meta_loss_trajectory_start == 0,
             "MAML adapts on every truncation's meta-loss: it does not combine with meta_loss_trajectory_start"),
            (maml.maml_inner_steps >= 0, f"maml_inner_steps must be >= 0, got {maml.maml_inner_steps}"),
            (estimation.estimator == "maml" or maml.maml_inner_steps == 0,
             f"maml_inner_steps is the maml estimator's option; it does not combine with --estimator={estimation.estimator}"),
            (estimation.estimator != "maml" or (penalty.regularizer == "none" and self.imitation.imitation_weight == 0),
             "MAML meta-training does not combine with a regularizer or imitation"),
            (not antithetic or self.distribution.optimizees % 2 == 0,
             f"--estimator={estimation.estimator} unrolls antithetic pairs: optimizees must be even, "
             f"got {self.distribution.optimizees}"),
            (not antithetic or estimation.es_sigma > 0, f"es_sigma must be > 0, got {estimation.es_sigma}"),
            (unrolling.native_kernel in ("auto", True, False),
             f"native_kernel must be auto, true or false, got {unrolling.native_kernel!r}"),
            (not (unrolling.native_kernel is True and unrolling.jit_compile),
             "native_kernel runs custom ops that XLA cannot compile: pass jit_compile or native_kernel, not both"),
            (not (unrolling.native_kernel is True and maml.maml_second_order and maml.maml_inner_steps),
             "native_kernel has no second derivative: it does not combine with maml_second_order"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")
        unrolling.unroll_config()
        penalty.penalty()
        maml.maml_config()

    @staticmethod
    def _task_family(values):
        """``("general",)``, the sigmas as floats, or task names."""
        values = tuple(values)
        if values == ("general",):
            return values
        try:
            return tuple(float(v) for v in values)
        except ValueError:
            pass
        if all(isinstance(v, str) and v in tasks.names() for v in values):
            return values
        raise ValueError(f"task_family must be 'general', a list of sigmas or a list of task names "
                         f"({', '.join(tasks.names())}), got {','.join(map(str, values))}")

    @classmethod
    def fields(cls):
        """``{option name: (group name or None, dataclasses.Field)}`` for every leaf option."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.name in GROUPS:
                out.update({g.name: (f.name, g) for g in dataclasses.fields(GROUPS[f.name])})
            else:
                out[f.name] = (None, f)
        return out

    @classmethod
    def from_flat(cls, **options):
        """A config from ``{option name: value}`` (flags, or a flat config.json of an older run)."""
        fields = cls.fields()
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"unknown meta-training option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}.")
        top, groups = {}, {name: {} for name in GROUPS}
        for name, value in options.items():
            group = fields[name][0]
            (groups[group] if group else top)[name] = value
        return cls(**top, **{name: GROUPS[name](**values) for name, values in groups.items()})

    @classmethod
    def from_dict(cls, data):
        """A config from its JSON form, nested or (older runs) flat."""
        if any(isinstance(data.get(name), dict) for name in GROUPS):
            return cls(**data)
        return cls.from_flat(**data)

    def flat(self):
        """``{option name: value}`` over every group (JSON types)."""
        data = json.loads(self.to_json())
        out = {k: v for k, v in data.items() if k not in GROUPS}
        for name in GROUPS:
            out.update(data[name])
        return out

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
