"""RNNprop: the coordinatewise optimizer of Lv, Jiang and Li 2017 ("Learning Gradient Descent:
Better Generalization and Longer Horizons")."""

import keras
import tensorflow as tf

from l2o_tf import kernels
from l2o_tf.rules.base import UpdateRule, step_count
from l2o_tf.rules.lstm import LSTMStack


@keras.saving.register_keras_serializable(package="l2o_tf")
class RNNprop(UpdateRule):
    """Adam-normalised inputs, ELU embedding, 2 LSTM(20), linear + tanh, scaled by 0.01.

    ``output_form="adam_scaled"`` reads the linear output ``z`` as a log step size on
    Adam's direction, ``-output_scale * exp(z) * m_hat / sqrt(v_hat)``: steps shrink
    with ``m_hat`` near an optimum (a tanh-bounded step does not), which is what
    lets it converge on LASSO-like problems; ``z = log(lr / output_scale)`` is Adam.

    The inputs ``m_hat / sqrt(v_hat)`` and ``g / sqrt(v_hat)`` (bias-corrected
    moments, beta1 = beta2 = 0.95) are invariant to the gradient's scale, which
    is what lets RNNprop transfer across problems.  But being scale-free they
    cannot tell how far the gradient has shrunk, so a learned step stalls where
    Adam (beta2 = 0.999) keeps converging.  ``long_beta_2`` (e.g. 0.999) adds a
    slow second moment ``u``: a third input ``m_hat / sqrt(u_hat)``, small once
    gradients have shrunk below their history, and, with ``adam_scaled``, a
    second learned log step size on that (Adam's own) direction, so the update
    is ``-output_scale * (exp(z1) m_hat / sqrt(v_hat) + exp(z2) m_hat / sqrt(u_hat))``.
    State per coordinate: ``[m, v]`` (and ``u``) followed by the LSTM stack's ``h`` and ``c``.
    """

    NATIVE_STEP = NATIVE_STACK = True
    CONFIG_FIELDS = ("hidden_size", "num_layers", "beta_1", "beta_2", "epsilon", "output_scale", "output_form",
                     "long_beta_2")
    OUTPUT_FORMS = ("tanh", "adam_scaled")

    def __init__(
        self,
        hidden_size=20,
        num_layers=2,
        beta_1=0.95,
        beta_2=0.95,
        epsilon=1e-8,
        output_scale=0.01,
        output_form="tanh",
        long_beta_2=None,
        seed=0,
        name=None,
        **kwargs,
    ):
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"RNNprop needs hidden_size >= 1 and num_layers >= 1, got "
                f"hidden_size={hidden_size}, num_layers={num_layers}."
            )
        if not (0.0 <= beta_1 < 1.0 and 0.0 <= beta_2 < 1.0):
            raise ValueError(f"RNNprop needs 0 <= beta < 1, got beta_1={beta_1}, beta_2={beta_2}.")
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        if output_form not in self.OUTPUT_FORMS:
            raise ValueError(f"RNNprop output_form must be one of {self.OUTPUT_FORMS}, got {output_form!r}.")
        self.output_scale = float(output_scale)
        self.output_form = output_form
        if long_beta_2 is not None and not 0.0 <= long_beta_2 < 1.0:
            raise ValueError(f"RNNprop needs 0 <= long_beta_2 < 1 (or None), got long_beta_2={long_beta_2}.")
        self.long_beta_2 = None if long_beta_2 is None else float(long_beta_2)
        super().__init__(seed=seed, name=name, **kwargs)

    def create_weights(self):
        self.input_kernel = self.add_weight(
            name="input_kernel",
            shape=(self.num_moments, self.hidden_size),  # one input per moment: m/sqrt(v), g/sqrt(v) [, m/sqrt(u)]
            initializer=self.weight_initializer(0),
        )
        self.input_bias = self.add_weight(
            name="input_bias", shape=(self.hidden_size,), initializer="zeros"
        )
        self.lstm = LSTMStack(self, self.hidden_size, self.hidden_size, self.num_layers, 1)
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.hidden_size, self.num_outputs),
            initializer=self.weight_initializer(1 + self.num_layers),
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.num_outputs,), initializer="zeros"
        )

    @property
    def num_moments(self):
        """Per-coordinate moments in the state: ``m, v`` (and the slow ``u``)."""
        return 2 if self.long_beta_2 is None else 3

    @property
    def num_outputs(self):
        """One log step size per direction with ``adam_scaled``; one bounded step with ``tanh``."""
        return self.num_moments - 1 if self.output_form == "adam_scaled" else 1

    @property
    def state_size(self):
        return self.num_moments + self.lstm.state_size

    def normalized_inputs(self, grads, moments, step):
        """Update the moments; return ``([m_hat, g] / sqrt(v_hat) [, m_hat / sqrt(u_hat)], moments)``."""
        t = step_count(step)
        m = self.beta_1 * moments[0] + (1.0 - self.beta_1) * grads
        m_hat = m / (1.0 - tf.pow(self.beta_1, t))
        v, v_scale = self._second_moment(self.beta_2, moments[1], grads, t)
        inputs, new_moments = [m_hat / v_scale, grads / v_scale], [m, v]
        if self.long_beta_2 is not None:
            u, u_scale = self._second_moment(self.long_beta_2, moments[2], grads, t)
            inputs.append(m_hat / u_scale)
            new_moments.append(u)
        return tf.stack(inputs, axis=1), new_moments

    def _second_moment(self, beta, previous, grads, t):
        """The updated moment and ``sqrt(bias-corrected moment) + epsilon``."""
        second = beta * previous + (1.0 - beta) * tf.square(grads)
        return second, tf.sqrt(second / (1.0 - tf.pow(beta, t))) + self.epsilon

    def call(self, grads, params, state, step):
        if kernels.whole_rule_enabled():
            return self._native_call(grads, state, step)
        k = self.num_moments
        inputs, moments = self.normalized_inputs(grads, tf.unstack(state[:, :k], axis=1), step)
        hidden, new_state = self.lstm(inputs, state, new_prefix=tf.stack(moments, axis=1),
                                      embedding=(self.input_kernel, self.input_bias))
        logits = tf.matmul(hidden, self.output_kernel) + self.output_bias
        if self.output_form == "adam_scaled":
            # Learned per-coordinate log step sizes on Adam-like directions (m_hat / sqrt(v_hat), and
            # m_hat / sqrt(u_hat) with long_beta_2): steps shrink with m_hat near an optimum.
            directions = tf.gather(inputs, [0, 2][: self.num_outputs], axis=1)  # the m_hat inputs
            steps = tf.exp(tf.clip_by_value(logits, -10.0, 5.0)) * directions
            return -self.output_scale * tf.reduce_sum(steps, axis=1), new_state
        return self.output_scale * tf.tanh(logits[:, 0]), new_state

    def _native_call(self, grads, state, step):
        """:meth:`call` in one native kernel (``kernels.rnnprop_step``, forward only), with the
        coefficients that the TF step uses, computed the same way."""
        t = step_count(step)
        coefficients = []
        for beta in [self.beta_1, self.beta_2] + ([] if self.long_beta_2 is None else [self.long_beta_2]):
            coefficients += [tf.constant(beta, tf.float32), tf.constant(1.0 - beta, tf.float32),
                             1.0 - tf.pow(beta, t)]
        coefficients += [tf.constant(self.epsilon, tf.float32), tf.constant(self.output_scale, tf.float32)]
        return kernels.rnnprop_step(grads, state, tf.stack(coefficients), self.lstm.native_weights(),
                                    (self.input_kernel, self.input_bias), (self.output_kernel, self.output_bias),
                                    self.output_form)
