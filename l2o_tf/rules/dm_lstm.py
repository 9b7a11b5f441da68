"""DM-LSTM: the coordinatewise LSTM optimizer of Andrychowicz et al. 2016 ("Learning to
learn by gradient descent by gradient descent")."""

import keras
import tensorflow as tf

from l2o_tf import kernels
from l2o_tf.rules.base import UpdateRule
from l2o_tf.rules.lstm import LSTMStack


def log_and_sign(grads, k=5.0):
    """The paper's gradient preprocessing (appendix A): two features per coordinate.

    ``(log|g| / k, sign g)`` where ``|g| >= e^-k``, else ``(-1, e^k g)``; it keeps
    gradients of very different magnitudes in the LSTM's working range.
    """
    threshold = tf.exp(-k)
    abs_g = tf.abs(grads)
    large = abs_g >= threshold
    safe_abs = tf.where(large, abs_g, tf.ones_like(abs_g))
    log_part = tf.where(large, tf.math.log(safe_abs) / k, -tf.ones_like(grads))
    sign_part = tf.where(large, tf.sign(grads), tf.exp(k) * grads)
    return tf.stack([log_part, sign_part], axis=1)


@keras.saving.register_keras_serializable(package="l2o_tf")
class DMLSTM(UpdateRule):
    """2-layer LSTM(20) shared across coordinates, linear output scaled by 0.01.

    State per coordinate: the LSTM stack's ``h`` and ``c`` (``2 * layers * hidden``).
    """

    NATIVE_STEP = NATIVE_STACK = True
    CONFIG_FIELDS = ("hidden_size", "num_layers", "preprocess", "preprocess_k", "output_scale")

    def __init__(
        self,
        hidden_size=20,
        num_layers=2,
        preprocess=True,
        preprocess_k=5.0,
        output_scale=0.01,
        seed=0,
        name=None,
        **kwargs,
    ):
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"DMLSTM needs hidden_size >= 1 and num_layers >= 1, got "
                f"hidden_size={hidden_size}, num_layers={num_layers}."
            )
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.preprocess = bool(preprocess)
        self.preprocess_k = float(preprocess_k)
        self.output_scale = float(output_scale)
        super().__init__(seed=seed, name=name, **kwargs)

    def create_weights(self):
        input_size = 2 if self.preprocess else 1
        self.lstm = LSTMStack(self, input_size, self.hidden_size, self.num_layers, 0)
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.hidden_size, 1),
            initializer=self.weight_initializer(self.num_layers),
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(1,), initializer="zeros"
        )

    @property
    def state_size(self):
        return self.lstm.state_size

    def call(self, grads, params, state, step):
        if kernels.whole_rule_enabled():
            return self._native_call(grads, state)
        if self.preprocess:
            inputs = log_and_sign(grads, self.preprocess_k)
        else:
            inputs = grads[:, None]
        hidden, new_state = self.lstm(inputs, state)
        out = tf.matmul(hidden, self.output_kernel) + self.output_bias
        return self.output_scale * out[:, 0], new_state

    def _native_call(self, grads, state):
        """:meth:`call` in one native kernel (``kernels.dmlstm_step``, forward only), with the
        constants that the TF step uses, computed the same way."""
        k = self.preprocess_k
        coefficients = tf.stack([tf.constant(k, tf.float32), tf.exp(-k), tf.exp(k),
                                 tf.constant(self.output_scale, tf.float32)])
        return kernels.dmlstm_step(grads, state, coefficients, self.lstm.native_weights(),
                                   (self.output_kernel, self.output_bias), self.preprocess)
