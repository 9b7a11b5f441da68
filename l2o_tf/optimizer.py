"""LearnedOptimizer: any update rule as a ``keras.optimizers.Optimizer``."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import kernels
from l2o_tf.rules.base import UpdateRule, apply_rule
from l2o_tf.rules.hypergradient import HypergradientScale
from l2o_tf.rules.layout import Layout

_SUPPORTED_DTYPES = ("float32", "float64")


class UntrainedRuleWarning(UserWarning):
    """A learned rule whose weights are its seed's random initialisation: it will not train a model."""


@keras.saving.register_keras_serializable(package="l2o_tf")
class LearnedOptimizer(keras.optimizers.Optimizer):
    """A Keras optimizer that applies an :class:`l2o_tf.rules.UpdateRule`.

    Each model variable gets one slot variable, float32 ``[size, S]``, holding
    the rule's state for its coordinates.  The new value of a variable is
    ``variable + learning_rate * updates``; learned rules produce steps of the
    right size themselves, hence ``learning_rate=1.0``.

    Args:
        rule: an ``UpdateRule`` (or its serialized config).
        learning_rate: multiplier of the rule's updates (float or schedule).
        fused: run the rule once over all coordinates of all variables instead
            of once per variable (same result; fewer, larger kernels).  Used
            only outside tf.distribute strategies, else per-variable.
        skip_nonfinite: where a variable's update or new rule state is not
            finite (NaN/Inf gradients), leave the variable and its rule state
            as they were and count it in ``skipped_updates``.
        jit_compile: compile the rule step with XLA even where Keras does not
            compile the train step (Keras leaves XLA off on CPU-only machines).
            ``"auto"`` (the default): XLA unless the native kernel runs the step;
            XLA is the fastest TensorFlow path for every rule measured
            (``benchmarks/fit_step_ms.py``: 1.3-3x faster than uncompiled on CPU).
            Equal to the uncompiled step to float rounding, not bit for bit;
            ``False`` gives the uncompiled step.
        rule_weights: the rule's weight values (nested lists, in ``rule.weights``
            order) to load into ``rule``; ``get_config`` records them, so that
            Keras serialization round-trips a meta-trained optimizer exactly.
        native_kernel: run the rule step with l2o_tf's native fused CPU kernels
            (:mod:`l2o_tf.kernels`), compiled with the system C++ compiler on
            first use (once per machine): the whole step of RNNprop and DM-LSTM
            in one kernel, of AdafacMLP in one kernel per tensor; the fastest CPU
            step (``benchmarks/fit_step_ms.py``: 1.6-2.7x faster than XLA on the
            0.9M-parameter conv net); equal to the TensorFlow step to float
            rounding.  ``"auto"`` (the default): on where the rule has such a
            kernel (not ``Hierarchical``), no GPU or TPU is visible, ``jit_compile``
            is not ``True`` and the kernel builds (else XLA, with a warning if the
            build failed).  CPU only; XLA cannot compile it, so it excludes
            ``jit_compile=True`` and needs ``model.compile(jit_compile=False)``
            where Keras would use XLA.
        **kwargs: the usual ``keras.optimizers.Optimizer`` arguments
            (``clipnorm``, ``weight_decay``, ``gradient_accumulation_steps``...).
            ``weight_decay`` follows Keras's decoupled form with the rule's
            nominal step as the step size: each step multiplies a variable by
            ``1 - weight_decay * learning_rate * rule.nominal_step``, so that
            ``LearnedOptimizer(rules.Adam(1e-3), weight_decay=wd)`` equals
            ``keras.optimizers.Adam(1e-3, weight_decay=wd)``; for DM-LSTM and
            RNNprop the nominal step is their ``output_scale`` (0.01).

    A learned rule whose weights are still its seed's random initialisation
    (e.g. ``LearnedOptimizer(rules.RNNprop())``) makes steps with no sense of
    direction; building one warns once (:class:`UntrainedRuleWarning`).  Use a
    meta-trained one: ``l2o_tf.pretrained.load("dmlstm-mnist")``.

    Sparse gradients (``tf.IndexedSlices``, e.g. from ``Embedding``) are
    densified: rows without a gradient see ``g = 0``, exactly as if the dense
    gradient had been given, so the rule state of every coordinate advances
    every step.  Variables must be float32 or float64 (the ``mixed_float16`` /
    ``mixed_bfloat16`` policies keep float32 variables and work); float16 or
    bfloat16 *variables* are refused with a ``TypeError``.
    """

    def __init__(self, rule, learning_rate=1.0, fused=False, skip_nonfinite=False, jit_compile="auto",
                 native_kernel="auto", rule_weights=None, name=None, **kwargs):
        if isinstance(rule, dict):
            rule = keras.saving.deserialize_keras_object(rule)
        if not isinstance(rule, UpdateRule):
            raise TypeError(
                f"LearnedOptimizer needs an l2o_tf.rules.UpdateRule (e.g. l2o_tf.rules.RNNprop()), "
                f"got {type(rule).__name__}."
            )
        if rule_weights is not None:
            _assign_rule_weights(rule, rule_weights)
        elif _is_untrained(rule):
            warnings.warn(
                f"{type(rule).__name__}'s weights are its random initialisation (seed {rule.seed}): this "
                "optimizer is untrained and will not train a model. Use a meta-trained one, e.g. "
                "l2o_tf.pretrained.load('dmlstm-mnist'), or meta-train one (l2o-meta-train).",
                UntrainedRuleWarning, stacklevel=2,
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rule = rule
        self.fused = bool(fused)
        self.skip_nonfinite = bool(skip_nonfinite)
        for option, value in (("jit_compile", jit_compile), ("native_kernel", native_kernel)):
            if value not in ("auto", True, False):
                raise ValueError(f"LearnedOptimizer: {option} must be 'auto', True or False, got {value!r}.")
        self.jit_compile_option, self.native_kernel_option = jit_compile, native_kernel
        self.native_kernel = _use_native_kernel(rule) if native_kernel == "auto" and jit_compile is not True else (
            native_kernel is True)
        self.jit_compile = (not self.native_kernel) if jit_compile == "auto" else bool(jit_compile)
        if self.jit_compile and self.native_kernel:
            raise ValueError("LearnedOptimizer: native_kernel=True runs a custom op that XLA cannot compile; "
                             "pass jit_compile=True or native_kernel=True, not both.")
        if self.native_kernel:
            kernels.load()  # build it now: a missing compiler is reported here, not mid-fit
        self._apply_rule = tf.function(self.rule, jit_compile=True) if self.jit_compile else self.rule

    def build(self, var_list):
        if self.built:
            return
        for variable in var_list:
            dtype = keras.backend.standardize_dtype(variable.dtype)
            if dtype not in _SUPPORTED_DTYPES:
                raise TypeError(
                    f"LearnedOptimizer cannot update variable {_variable_path(variable)!r} of dtype {dtype}: "
                    "rule state is float32, use float32 variables (the 'mixed_float16' or "
                    "'mixed_bfloat16' dtype policy keeps variables in float32)."
                )
        super().build(var_list)
        if self.skip_nonfinite:
            self.skipped_updates = self.add_variable(shape=(), dtype="int64", name="skipped_updates")
        sizes = [_num_elements(v) for v in var_list]
        initializer = lambda shape, dtype=None: self.rule.initial_state(shape[0])  # noqa: E731
        # Fused: one [total, S] slot for all coordinates, so a step reads and writes the state
        # once instead of concatenating and splitting it.  Decided here, outside strategies only.
        self._fused_layout = self.fused and not tf.distribute.has_strategy()
        if self._fused_layout:
            self._offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
            self._fused_state = self.add_variable(
                shape=(self._offsets[-1], self.rule.state_size), initializer=initializer,
                dtype="float32", name="fused_rule_state",
            )
            return
        self._rule_states = [
            self.add_variable(
                shape=(size, self.rule.state_size), initializer=initializer, dtype="float32",
                name=f"{_variable_path(variable).replace('/', '_')}_rule_state",
            )
            for variable, size in zip(var_list, sizes)
        ]

    def rule_state(self, variable):
        """``variable``'s rule state ``[size, S]``: its slot variable, or its rows of the fused slot."""
        index = self._get_variable_index(variable)
        if self._fused_layout:
            return self._fused_state.value[self._offsets[index] : self._offsets[index + 1]]
        return self._rule_states[index]

    def _rule_step(self, flat_grads, flat_params, state, learning_rate, layout):
        """Apply the rule to flat float32 vectors laid out as ``layout``; returns (scaled updates, new state)."""
        # Nothing differentiates an optimizer's apply step: rules run their whole-step kernel.
        with kernels.native(self.native_kernel, whole_rule=True):
            updates, new_state = apply_rule(self.rule, flat_grads, flat_params, state,
                                            tf.convert_to_tensor(self.iterations), layout, call=self._apply_rule)
        updates = tf.cast(learning_rate, tf.float32) * updates
        if self.skip_nonfinite:
            finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(updates)), tf.reduce_all(tf.math.is_finite(new_state)))
            updates = tf.where(finite, updates, tf.zeros_like(updates))
            new_state = tf.where(finite, new_state, state)
            self.skipped_updates.assign_add(1 - tf.cast(finite, tf.int64))
        return updates, new_state

    def update_step(self, gradient, variable, learning_rate):
        state = self.rule_state(variable)
        updates, new_state = self._rule_step(
            _flat(gradient), _flat(variable), state.value, learning_rate, Layout.of([variable])
        )
        self.assign_add(variable, tf.reshape(updates, variable.shape))
        self.assign(state, new_state)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fused_layout:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        indices = [self._get_variable_index(v) for v in trainable_variables]
        every_variable = indices == list(range(len(self._offsets) - 1))
        rows = [(self._offsets[i], self._offsets[i + 1]) for i in indices]
        if every_variable:
            state = self._fused_state.value
        else:  # some gradients were None (filtered out): gather just the rows of the others
            state = tf.concat([self._fused_state.value[a:b] for a, b in rows], axis=0)
        updates, new_state = self._rule_step(
            tf.concat([_flat(g) for g in grads], axis=0),
            tf.concat([_flat(v) for v in trainable_variables], axis=0),
            state,
            learning_rate,
            Layout.of(trainable_variables),
        )
        if every_variable:
            self.assign(self._fused_state, new_state)
        else:
            for (a, b), part in zip(rows, tf.split(new_state, [b - a for a, b in rows])):
                self._fused_state.value[a:b].assign(part)
        for variable, update in zip(trainable_variables, tf.split(updates, [b - a for a, b in rows])):
            self.assign_add(variable, tf.reshape(update, variable.shape))

    def _apply_weight_decay(self, variables):
        """Keras's decoupled decay, with the step size the rule's nominal step times ``learning_rate``."""
        if self.weight_decay is None:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                rate = tf.cast(self.learning_rate, variable.dtype) * tf.cast(
                    self.weight_decay * self.rule.nominal_step, variable.dtype)
                variable.assign(variable - variable * rate)

    def get_config(self):
        config = super().get_config()
        config.update(rule=keras.saving.serialize_keras_object(self.rule), fused=self.fused,
                      skip_nonfinite=self.skip_nonfinite, jit_compile=self.jit_compile_option,
                      native_kernel=self.native_kernel_option,
                      rule_weights=[w.numpy().tolist() for w in self.rule.weights] or None)
        return config


def _use_native_kernel(rule):
    """native_kernel="auto": the native whole-step kernel where it is the fastest step, that is where the rule has
    one and the model trains on the CPU (a GPU or TPU gets XLA), if the kernel builds here (else XLA, with a warning)."""
    return rule.NATIVE_STEP and kernels.usable_here(
        "LearnedOptimizer", "the rule step runs compiled by XLA instead (native_kernel=False silences this)")


def _assign_rule_weights(rule, values):
    """Load ``values`` (as ``get_config`` records them) into ``rule``, checking every shape."""
    if len(values) != len(rule.weights):
        raise ValueError(f"rule_weights has {len(values)} arrays; {type(rule).__name__} has {len(rule.weights)} weights.")
    arrays = [np.asarray(v, dtype=np.float32) for v in values]
    for weight, array in zip(rule.weights, arrays):
        if array.shape != tuple(weight.shape):
            raise ValueError(f"rule_weights: {weight.path} has shape {tuple(weight.shape)}, got {array.shape}.")
    for weight, array in zip(rule.weights, arrays):
        weight.assign(array)


def _is_untrained(rule):
    """Whether ``rule`` is learned and its weights equal a fresh rule's of the same config (seed)."""
    if isinstance(rule, HypergradientScale):  # a wrapper: its weights are the wrapped rule's
        rule = rule.rule
    if not (rule.SEEDED and rule.trainable_weights):
        return False
    if getattr(rule, "adam_prior", 0) and getattr(rule, "zero_init_output", False):
        return False  # untrained, it is Adam: it trains a model
    fresh = type(rule).from_config(rule.get_config())
    return all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(rule.weights, fresh.weights))


def _variable_path(variable):
    """A Keras variable's path, or a plain tf.Variable's name (custom loops)."""
    return getattr(variable, "path", None) or variable.name.split(":")[0]


def _num_elements(variable):
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size


def _flat(tensor):
    """A gradient or variable as a dense float32 vector (IndexedSlices are densified)."""
    if isinstance(tensor, tf.IndexedSlices):
        tensor = tf.convert_to_tensor(tensor)
    elif hasattr(tensor, "value") and not tf.is_tensor(tensor):
        tensor = tensor.value
    return tf.reshape(tf.cast(tensor, tf.float32), [-1])
