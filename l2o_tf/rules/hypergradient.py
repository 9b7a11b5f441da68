"""HypergradientScale: any rule with a per-tensor step scale adapted online by hypergradient descent.

A learned rule meta-trained on one family takes steps of the size that family wants; on a model that
wants smaller (or larger) steps it cannot tell.  Baydin et al. (2018, "Online learning rate adaptation
with hypergradient descent") adapt a step size from the derivative of the loss with respect to the
previous step's size: for ``theta_t = theta_{t-1} + a * u_{t-1}``, ``dL(theta_t)/da = g_t . u_{t-1}``.
A positive value means the last step overshot (the new gradient still points along it), a negative one
that it fell short.  Here, per tensor ``k``, with the normalised (cosine) form so that the rate of
change does not depend on the gradient's scale:

    s_k <- clip(s_k - rate * cos(g_t[k], u_{t-1}[k]), log(min_scale), log(max_scale))
    u_t = exp(s_k) * rule(g_t, ...)

The wrapped rule sees the same gradients, parameters and state as without the wrapper; only its
output is scaled.  State per coordinate: the rule's, then the previous scaled update and ``s`` (the
same for every coordinate of a tensor).  A ``rate`` of 0 is the wrapped rule exactly.
"""

import math

import keras
import tensorflow as tf

from l2o_tf.rules.base import UpdateRule, apply_rule
from l2o_tf.rules.layout import Layout


@keras.saving.register_keras_serializable(package="l2o_tf")
class HypergradientScale(UpdateRule):
    """``rule``'s updates times a per-tensor scale learned online by hypergradient descent (module docstring)."""

    SEEDED = False  # no weights of its own: ``weights`` are the wrapped rule's, in its order
    LAYOUT_AWARE = True  # per-tensor scales

    def __init__(self, rule, rate=0.005, min_scale=0.1, max_scale=1.0, name=None, **kwargs):
        if isinstance(rule, dict):
            rule = keras.saving.deserialize_keras_object(rule)
        if not isinstance(rule, UpdateRule) or isinstance(rule, HypergradientScale):
            raise TypeError(f"HypergradientScale wraps one UpdateRule (not itself), got {type(rule).__name__}.")
        if rate < 0 or not 0 < min_scale <= 1.0 <= max_scale:
            raise ValueError(f"HypergradientScale needs rate >= 0 and 0 < min_scale <= 1 <= max_scale, got rate "
                             f"{rate}, min_scale {min_scale}, max_scale {max_scale}.")
        self._wrapped = rule
        # The wrapped rule's native step still runs inside this one (its own ops are a few per-tensor means).
        self.NATIVE_STEP, self.NATIVE_STACK = rule.NATIVE_STEP, rule.NATIVE_STACK
        self.rate, self.min_scale, self.max_scale = float(rate), float(min_scale), float(max_scale)
        super().__init__(name=name or f"hypergradient_{rule.name}", **kwargs)

    def create_weights(self):
        self.rule = self._wrapped  # tracked as a sublayer: its weights are this rule's weights

    @property
    def state_size(self):
        return self.rule.state_size + 2

    @property
    def nominal_step(self):
        return self.rule.nominal_step

    @property
    def seed(self):
        return getattr(self.rule, "seed", 0)

    @seed.setter
    def seed(self, value):  # UpdateRule.__init__ sets it; the wrapped rule's is the one that counts
        pass

    def initial_state(self, num_coordinates):
        return tf.concat([self.rule.initial_state(num_coordinates),
                          tf.zeros(tf.stack([num_coordinates, 2]), tf.float32)], axis=1)

    def call(self, grads, params, state, step, layout=None):
        layout = Layout.given_or_flat(layout, grads, type(self).__name__)
        inner_size = self.rule.state_size
        previous, log_scale = state[:, inner_size], state[:, inner_size + 1]
        updates, inner_state = apply_rule(self.rule, grads, params, state[:, :inner_size], step, layout)
        pair = tf.stack([grads * previous, tf.square(grads), tf.square(previous)], axis=1)
        means = layout.tensor_mean(pair, broadcastable=True)
        cosine = means[:, 0] * tf.math.rsqrt(means[:, 1] * means[:, 2] + 1e-30)  # 0 at the first step
        log_scale = tf.clip_by_value(log_scale - self.rate * cosine, math.log(self.min_scale), math.log(self.max_scale))
        scaled = updates * tf.exp(log_scale)
        return scaled, tf.concat([inner_state, scaled[:, None], log_scale[:, None]], axis=1)

    def scales(self, state, layout):
        """The per-tensor step scales held in ``state`` (``[num_tensors]``): what the adaptation has chosen."""
        return tf.exp(layout.first_of_each(state[:, self.rule.state_size + 1]))

    def get_config(self):
        config = super().get_config()
        config.update(rule=keras.saving.serialize_keras_object(self.rule), rate=self.rate,
                      min_scale=self.min_scale, max_scale=self.max_scale)
        return config
