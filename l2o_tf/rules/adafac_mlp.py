"""AdafacMLP: a tiny per-parameter MLP over Adam- and Adafactor-style features (Metz et al. 2022,
learned_optimization's ``AdafacMLPLOpt``), the kind of learned optimizer that transfers across tasks.

Per coordinate, with momentum decays ``b_m`` (default 0.9, 0.99, 0.999), an RMS decay ``b_r``
(0.999) and Adafactor decays ``b_f`` (0.9, 0.99, 0.999), the features are

    g, p, m_k, rms, m_k / sqrt(rms), 1 / sqrt(rms),
    Adafactor's g / sqrt(v_hat_k), its row and column accumulators r_k, c_k, their 1 / sqrt,
    and m_k / sqrt(r_k / mean(r_k) * c_k)  (momentum k with Adafactor factor k: as many of each)

where ``r_k`` and ``c_k`` are running means of ``g^2`` over each tensor's last dimension
(rows) and second-to-last (columns) and ``v_hat = r c / mean(r)`` (tensors of rank < 2 use a
plain running ``g^2`` for both, as RMSProp).  Each feature is normalised by its root mean
square over the coordinate's tensor (per tensor, so ``fit``'s per-variable and fused steps
agree); then ``tanh`` embeddings of the step count at timescales 1 ... 100,000 are appended.
Those need no total number of steps: the step count is all they use.  With ``step_horizon = H > 0`` the
embedding reads ``min(t, H)``: a rule meta-trained on trajectories of at most ``H`` steps sees, past them, the
progress features of its last trained step instead of values it never met (the moment features and the Adam
prior's bias correction still use the true step).  A ReLU MLP maps the
features to a direction ``d`` and a log-magnitude ``s``; the update is
``-d * exp(exp_mult * s) * step_mult``.

With ``adam_prior = a > 0`` the network corrects Adam instead of replacing it: the update is
``-(d + a * adam(m_1, rms)) * exp(exp_mult * s) * step_mult`` with Adam's bias-corrected step on the
first momentum and the RMS accumulator (betas ``momentum_decays[0]``, ``rms_decay``).  With
``zero_init_output`` the last layer starts at zero, so an untrained rule *is* Adam at
``step_mult * a``: meta-training starts from the optimizer users trust and moves away from it only
where the meta-loss says so (the recipe of Celo's and VeLO's Adam-like fallbacks, on a CPU budget).

State per coordinate: ``[m_1..m_M, rms, r_1..r_F, c_1..c_F]``.  Row and column accumulators
are stored with every coordinate of their row / column (each holds the same value), so the
state stays one ``[n, S]`` array like every rule's.
"""

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import kernels, seeds
from l2o_tf.rules.base import UpdateRule, require_same_config
from l2o_tf.rules.baselines import adam_step, adam_step_size
from l2o_tf.rules.layout import Layout

TIMESCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
# Epsilon of the Adam prior's step (Keras Adam's default), in the TF step and the native kernel alike.
ADAM_EPSILON = 1e-7


def step_embedding(step):
    """``tanh(t / timescale) - 1`` at every timescale (a training-progress feature without a horizon): ``[len(TIMESCALES)]``."""
    t = tf.cast(step, tf.float32)
    return tf.tanh(t / tf.constant(TIMESCALES, tf.float32)) - 1.0


@keras.saving.register_keras_serializable(package="l2o_tf")
class AdafacMLP(UpdateRule):
    """The per-parameter MLP learned optimizer; see the module docstring for its features."""

    CONFIG_FIELDS = ("hidden_size", "hidden_layers", "momentum_decays", "rms_decay", "adafactor_decays",
                     "exp_mult", "step_mult", "adam_prior", "zero_init_output")
    OPTIONAL_CONFIG_FIELDS = {"step_horizon": 0}
    NOMINAL_STEP_FIELD = "step_mult"
    LAYOUT_AWARE = True
    NATIVE_STEP = True

    def __init__(self, hidden_size=4, hidden_layers=2, momentum_decays=(0.9, 0.99, 0.999), rms_decay=0.999,
                 adafactor_decays=(0.9, 0.99, 0.999), exp_mult=1e-3, step_mult=1e-3, adam_prior=0.0,
                 zero_init_output=False, step_horizon=0, seed=0, name=None, **kwargs):
        decays = list(momentum_decays) + [rms_decay] + list(adafactor_decays)
        if hidden_size < 1 or hidden_layers < 0:
            raise ValueError(f"AdafacMLP needs hidden_size >= 1 and hidden_layers >= 0, got {hidden_size}, {hidden_layers}.")
        if not momentum_decays or not adafactor_decays or not all(0.0 <= d < 1.0 for d in decays):
            raise ValueError(f"AdafacMLP needs at least one momentum and one Adafactor decay, all in [0, 1), got "
                             f"momentum {list(momentum_decays)}, rms {rms_decay}, adafactor {list(adafactor_decays)}.")
        if len(momentum_decays) != len(adafactor_decays):
            raise ValueError(f"AdafacMLP needs as many momentum decays as Adafactor decays (feature k is m_k times "
                             f"Adafactor factor k), got {list(momentum_decays)} and {list(adafactor_decays)}.")
        if step_mult <= 0:
            raise ValueError(f"AdafacMLP needs step_mult > 0, got {step_mult}.")
        if adam_prior < 0:
            raise ValueError(f"AdafacMLP needs adam_prior >= 0, got {adam_prior}.")
        if step_horizon < 0 or int(step_horizon) != step_horizon:
            raise ValueError(f"AdafacMLP needs step_horizon to be a whole number >= 0 (0: no horizon), got {step_horizon}.")
        self.step_horizon = int(step_horizon)
        self.adam_prior, self.zero_init_output = float(adam_prior), bool(zero_init_output)
        self.hidden_size, self.hidden_layers = int(hidden_size), int(hidden_layers)
        self.momentum_decays = tuple(float(d) for d in momentum_decays)
        self.rms_decay = float(rms_decay)
        self.adafactor_decays = tuple(float(d) for d in adafactor_decays)
        self.exp_mult, self.step_mult = float(exp_mult), float(step_mult)
        super().__init__(seed=seed, name=name, **kwargs)

    @property
    def num_features(self):
        """Normalised features per coordinate (the step embedding comes on top)."""
        m = len(self.momentum_decays)  # as many as Adafactor decays
        return 2 + m + 1 + m + 1 + 6 * m

    @property
    def state_size(self):
        return len(self.momentum_decays) + 1 + 2 * len(self.adafactor_decays)

    def create_weights(self):
        self.kernels, self.biases = self._dense_stack(
            [self.num_features + len(TIMESCALES) + self.context_size] + [self.hidden_size] * self.hidden_layers + [2], 0)
        if self.zero_init_output:
            self.kernels[-1].assign(tf.zeros_like(self.kernels[-1]))

    @property
    def context_size(self):
        """Inputs per coordinate beyond its own features and the step embedding (a subclass's context)."""
        return 0

    def _dense_stack(self, sizes, first_index):
        """Kernels (truncated normal, stddev 1 / sqrt(fan_in)) and zero biases of an MLP with these sizes."""
        kernels, biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            init = keras.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(fan_in),
                                                      seed=seeds.rule_weight(self.seed, first_index + i))
            kernels.append(self.add_weight(name=f"kernel_{first_index + i}", shape=(fan_in, fan_out), initializer=init))
            biases.append(self.add_weight(name=f"bias_{first_index + i}", shape=(fan_out,), initializer="zeros"))
        return kernels, biases

    def call(self, grads, params, state, step, layout=None):
        layout = Layout.given_or_flat(layout, grads, type(self).__name__)
        if kernels.whole_rule_enabled() and self.NATIVE_STEP:
            return self._native_call(grads, params, state, step, layout)
        raw, new_state = self.raw_features(grads, params, state, layout)
        norm = self.feature_scale(raw, layout)
        # The first layer, split by input: features @ W_f + embedding @ W_e + context @ W_c.  The step embedding is
        # the same for every coordinate (one row, no [n, 11] block), and a one-tensor layout's per-feature scale
        # folds into W_f; equal to the concatenated form up to float rounding, without materialising it.
        num_features, kernel = self.num_features, self.kernels[0]
        feature_kernel = kernel[:num_features]
        features = None if norm.shape[0] == 1 and not self.context_size else raw * norm
        if features is None:
            net = tf.matmul(raw, tf.transpose(norm) * feature_kernel)
        else:
            net = tf.matmul(features, feature_kernel)
        net += self._step_bias(step)
        context_state = state[:, new_state.shape[1]:]
        if self.context_size:
            context, context_state = self.context(features, context_state, layout)
            net += tf.matmul(context, kernel[num_features + len(TIMESCALES):])
        for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
            net = tf.matmul(tf.nn.relu(net), kernel) + bias
        direction, magnitude = net[:, 0], net[:, 1]
        scale = tf.exp(self.exp_mult * magnitude) * self.step_mult
        updates = -direction * scale
        if self.adam_prior:
            m_count = len(self.momentum_decays)
            updates -= adam_step(new_state[:, 0], new_state[:, m_count], step, scale * self.adam_prior,
                                 self.momentum_decays[0], self.rms_decay, ADAM_EPSILON)
        return updates, tf.concat([new_state, context_state], axis=1)

    def _step_bias(self, step):
        """The first layer's bias plus the step embedding's share, ``[1, hidden]``: the embedding is the same for
        every coordinate, so it enters as one row instead of an ``[n, len(TIMESCALES)]`` block."""
        embedding_kernel = self.kernels[0][self.num_features:self.num_features + len(TIMESCALES)]
        if self.step_horizon:
            step = tf.convert_to_tensor(step)
            step = tf.minimum(step, tf.cast(self.step_horizon, step.dtype))
        return tf.matmul(step_embedding(step)[None, :], embedding_kernel) + self.biases[0]

    def _native_call(self, grads, params, state, step, layout):
        """:meth:`call` in the native kernel (``kernels.adafac_mlp_step``, forward only), once per tensor
        of the layout, with the coefficients the TF step uses, computed in the same float order."""
        one = np.float32(1.0)
        m_decays = np.array(self.momentum_decays, np.float32)
        f_decays = np.array(self.adafactor_decays, np.float32)
        constants = np.concatenate([m_decays, one - m_decays, np.float32([self.rms_decay, 1.0 - self.rms_decay]),
                                    f_decays, one - f_decays, np.float32([self.exp_mult, self.step_mult])])
        adam = (adam_step_size(step, self.adam_prior, self.momentum_decays[0], self.rms_decay)
                if self.adam_prior else tf.constant(0.0))
        coefficients = tf.concat([tf.constant(constants), tf.stack([adam, tf.constant(ADAM_EPSILON)])], axis=0)
        weights = ([self.kernels[0][:self.num_features]] + list(self.kernels[1:]),
                   [self._step_bias(step)[0]] + list(self.biases[1:]))
        parts = zip(layout.shapes, tf.split(grads, layout.sizes), tf.split(params, layout.sizes),
                    tf.split(state, layout.sizes))
        steps = [kernels.adafac_mlp_step(g, p, s, coefficients, *weights, len(self.momentum_decays),
                                         tuple(shape[-2:]) if len(shape) >= 2 else None)
                 for shape, g, p, s in parts]
        if len(steps) == 1:
            return steps[0]
        return tf.concat([u for u, _ in steps], axis=0), tf.concat([s for _, s in steps], axis=0)

    def context(self, features, context_state, layout):
        """A subclass's extra inputs and their new state; none here."""
        return features[:, :0], context_state

    @staticmethod
    def feature_scale(raw, layout):
        """Each feature's ``1 / RMS`` over its tensor (``[1, F]`` for a one-tensor layout, else ``[n, F]``)."""
        return tf.math.rsqrt(layout.tensor_mean(tf.square(raw), broadcastable=True) + 1e-5)

    def raw_features(self, grads, params, state, layout):
        """The features before normalisation ``[n, num_features]`` and the new moment state."""
        m_count, f_count = len(self.momentum_decays), len(self.adafactor_decays)
        m_prev, rms_prev = state[:, :m_count], state[:, m_count]
        rows_prev = state[:, m_count + 1:m_count + 1 + f_count]
        cols_prev = state[:, m_count + 1 + f_count:m_count + 1 + 2 * f_count]

        g = grads[:, None]
        m_decays = tf.constant(self.momentum_decays, tf.float32)
        f_decays = tf.constant(self.adafactor_decays, tf.float32)
        m = m_decays * m_prev + (1.0 - m_decays) * g
        rms = self.rms_decay * rms_prev + (1.0 - self.rms_decay) * tf.square(grads)
        g2 = tf.square(g) + 1e-30
        row_means, col_means = layout.factored_means(g2)
        rows = f_decays * rows_prev + (1.0 - f_decays) * row_means
        cols = f_decays * cols_prev + (1.0 - f_decays) * col_means
        row_scale = rows / (layout.tensor_mean(rows, broadcastable=True) + 1e-30)  # r / mean(r): Adafactor's row factor

        def factored_or_not(if_factored, if_not):  # a static choice where every tensor is (or none is) factored
            kinds = set(layout.factored_kinds)
            if kinds == {True}:
                return if_factored()
            if kinds == {False}:
                return if_not()
            return tf.where(layout.factored()[:, None], if_factored(), if_not())

        v_hat = factored_or_not(lambda: row_scale * cols, lambda: rows)
        fac_g = g * tf.math.rsqrt(v_hat + 1e-30)
        rsqrt_rms = tf.math.rsqrt(rms[:, None] + 1e-6)
        fac_mom = m * factored_or_not(lambda: tf.math.rsqrt(row_scale + 1e-9) * tf.math.rsqrt(cols + 1e-9),
                                      lambda: tf.math.rsqrt(rows + 1e-6))
        features = tf.concat([
            g, params[:, None], m, rms[:, None], m * rsqrt_rms, rsqrt_rms, fac_g,
            rows, cols, tf.math.rsqrt(rows + 1e-8), tf.math.rsqrt(cols + 1e-8), fac_mom,
        ], axis=1)
        return features, tf.concat([m, rms[:, None], rows, cols], axis=1)


@keras.saving.register_keras_serializable(package="l2o_tf")
class Hierarchical(AdafacMLP):
    """AdafacMLP with a per-tensor recurrent context (L2O-Scale, Wichrowska et al. 2017; learned_optimization's
    RNN-MLP): a GRU per tensor reads the tensor's mean features every step, and its hidden state joins each
    of the tensor's coordinates' inputs to the MLP, so that the step of a coordinate can depend on how its
    whole tensor has been training.

    State per coordinate: AdafacMLP's, then the tensor's GRU state (``context_size`` columns, the same
    for every coordinate of a tensor).
    """

    CONFIG_FIELDS = AdafacMLP.CONFIG_FIELDS + ("context_hidden",)
    NATIVE_STEP = False  # the per-tensor GRU runs in TensorFlow

    def __init__(self, context_hidden=8, hidden_size=8, **kwargs):
        if context_hidden < 1:
            raise ValueError(f"Hierarchical needs context_hidden >= 1, got {context_hidden}.")
        self.context_hidden = int(context_hidden)
        super().__init__(hidden_size=hidden_size, **kwargs)

    @property
    def context_size(self):
        return self.context_hidden

    @property
    def state_size(self):
        return super().state_size + self.context_hidden

    def create_weights(self):
        super().create_weights()
        first = self.hidden_layers + 1  # seeds after the MLP's
        inputs, hidden = 2 * self.num_features, self.context_hidden
        (self.gru_input_kernel,), (self.gru_input_bias,) = self._dense_stack([inputs, 3 * hidden], first)
        (self.gru_recurrent_kernel,), (self.gru_recurrent_bias,) = self._dense_stack([hidden, 3 * hidden], first + 1)

    def warm_start_from(self, source):
        """Also start from a trained AdafacMLP of the same config: its weights are copied and the first kernel's
        context rows start at zero, so this rule begins as that rule's exact update (up to float rounding) and
        meta-training grows the per-tensor context from there; the GRU keeps its own initialisation."""
        if type(source) is not AdafacMLP:
            return super().warm_start_from(source)
        require_same_config(self, source, ignore=("context_hidden",))
        for weight, value in zip(self.kernels + self.biases, source.kernels + source.biases):
            if weight is self.kernels[0]:
                value = tf.concat([value, tf.zeros([self.context_size, value.shape[1]], value.dtype)], axis=0)
            weight.assign(value)

    def context(self, features, context_state, layout):
        """One GRU step per tensor (Keras's ``reset_after`` form) on the tensor's mean and mean absolute features."""
        x = layout.first_of_each(tf.concat([layout.tensor_mean(features), layout.tensor_mean(tf.abs(features))], axis=1))
        h = layout.first_of_each(context_state)
        x_proj = tf.matmul(x, self.gru_input_kernel) + self.gru_input_bias
        h_proj = tf.matmul(h, self.gru_recurrent_kernel) + self.gru_recurrent_bias
        x_z, x_r, x_n = tf.split(x_proj, 3, axis=1)
        h_z, h_r, h_n = tf.split(h_proj, 3, axis=1)
        z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
        h_new = (1.0 - z) * tf.tanh(x_n + r * h_n) + z * h
        per_coordinate = layout.broadcast(h_new)
        return per_coordinate, per_coordinate
