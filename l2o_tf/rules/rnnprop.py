"""RNNprop: the coordinatewise optimizer of Lv, Jiang and Li 2017 ("Learning Gradient Descent:
Better Generalization and Longer Horizons")."""

import keras
import tensorflow as tf

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
    is what lets RNNprop transfer across problems.  State per coordinate:
    ``[m, v]`` followed by the LSTM stack's ``h`` and ``c``.
    """

    CONFIG_FIELDS = ("hidden_size", "num_layers", "beta_1", "beta_2", "epsilon", "output_scale", "output_form")
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
        super().__init__(seed=seed, name=name, **kwargs)

    def create_weights(self):
        self.input_kernel = self.add_weight(
            name="input_kernel",
            shape=(2, self.hidden_size),
            initializer=self.weight_initializer(0),
        )
        self.input_bias = self.add_weight(
            name="input_bias", shape=(self.hidden_size,), initializer="zeros"
        )
        self.lstm = LSTMStack(self, self.hidden_size, self.hidden_size, self.num_layers, 1)
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.hidden_size, 1),
            initializer=self.weight_initializer(1 + self.num_layers),
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(1,), initializer="zeros"
        )

    @property
    def state_size(self):
        return 2 + self.lstm.state_size

    def normalized_inputs(self, grads, m, v, step):
        """Update the moments and return ``([m_hat, g] / sqrt(v_hat), m, v)``."""
        m = self.beta_1 * m + (1.0 - self.beta_1) * grads
        v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grads)
        t = step_count(step)
        m_hat = m / (1.0 - tf.pow(self.beta_1, t))
        v_hat = v / (1.0 - tf.pow(self.beta_2, t))
        scale = tf.sqrt(v_hat) + self.epsilon
        return tf.stack([m_hat / scale, grads / scale], axis=1), m, v

    def call(self, grads, params, state, step):
        inputs, m, v = self.normalized_inputs(grads, state[:, 0], state[:, 1], step)
        embedded = tf.nn.elu(tf.matmul(inputs, self.input_kernel) + self.input_bias)
        hidden, lstm_parts = self.lstm.step(embedded, self.lstm.split_state(state[:, 2:]))
        logits = (tf.matmul(hidden, self.output_kernel) + self.output_bias)[:, 0]
        new_state = tf.concat([m[:, None], v[:, None]] + lstm_parts, axis=1)
        if self.output_form == "adam_scaled":
            # A learned per-coordinate log step size on Adam's direction: steps shrink with m_hat near an optimum.
            return -self.output_scale * tf.exp(tf.clip_by_value(logits, -10.0, 5.0)) * inputs[:, 0], new_state
        return self.output_scale * tf.tanh(logits), new_state
