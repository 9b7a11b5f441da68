"""A coordinatewise stack of LSTM cells, shared by DM-LSTM and RNNprop.

Every coordinate is a batch row; the cells' weights are shared across rows.
The stack's state is stored flat as ``[n, 2 * num_layers * hidden_size]``
(``h`` then ``c`` for each layer) so that it fits the rules' flat state.
"""

import tensorflow as tf

from l2o_tf import kernels


class LSTMStack:
    """Weights and step of ``num_layers`` stacked LSTM cells, created on a host layer."""

    def __init__(self, host, input_size, hidden_size, num_layers, first_index):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.kernels = []
        self.biases = []
        size_in = input_size
        for layer in range(num_layers):
            self.kernels.append(
                host.add_weight(
                    name=f"lstm{layer}_kernel",
                    shape=(size_in + hidden_size, 4 * hidden_size),
                    initializer=host.weight_initializer(first_index + layer),
                )
            )
            # Gate order i, f, g, o; forget-gate bias 1 (Jozefowicz et al. 2015).
            self.biases.append(
                host.add_weight(
                    name=f"lstm{layer}_bias",
                    shape=(4 * hidden_size,),
                    initializer=_forget_bias_one(hidden_size),
                )
            )
            size_in = hidden_size

    @property
    def _gate_scale(self):
        """Per-column factor of the gate pre-activations: 1/2 for the sigmoid gates i, f, o; 1 for g."""
        hidden = self.hidden_size
        return tf.constant([0.5] * (2 * hidden) + [1.0] * hidden + [0.5] * hidden, tf.float32)

    @property
    def state_size(self):
        return 2 * self.num_layers * self.hidden_size

    def __call__(self, inputs, state, new_prefix=None, embedding=None):
        """One step for every row: returns (top-layer output ``[n, H]``, new flat state).

        ``state`` may start with ``k`` columns the caller owns (a rule's moments): then
        ``new_prefix`` ``[n, k]`` gives their new values, and the new state is
        ``[new_prefix, h0, c0, ...]``.  ``embedding=(kernel, bias)`` is an ELU input layer,
        ``elu(inputs @ kernel + bias)``, applied first (RNNprop's).  Inside
        :func:`l2o_tf.kernels.native` (``LearnedOptimizer(native_kernel=True)``'s apply step,
        ``MetaTrainConfig.from_flat(native_kernel=True)``'s unrolls) the native fused kernel runs this step.
        """
        if kernels.native_enabled():
            if new_prefix is None:
                new_prefix = tf.zeros([tf.shape(state)[0], 0], state.dtype)
            return kernels.lstm_stack_step(inputs, state, new_prefix, *self.native_weights(), embedding)
        if embedding is not None:
            inputs = tf.nn.elu(tf.matmul(inputs, embedding[0]) + embedding[1])
        prefix = [] if new_prefix is None else [new_prefix]
        output, parts = self.step(inputs, self.split_state(state[:, new_prefix.shape[1]:] if prefix else state))
        return output, tf.concat(prefix + parts, axis=1)

    def native_weights(self):
        """``(kernels, biases)`` multiplied by the gate scale, as the native kernels take them."""
        scale = self._gate_scale
        return [kernel * scale for kernel in self.kernels], [bias * scale for bias in self.biases]

    def split_state(self, state):
        """The flat state ``[n, 2 * layers * H]`` as its blocks ``[h0, c0, h1, c1, ...]``, each ``[n, H]``.

        A reshape and one unstack rather than a column slice per block: the gradient of a
        slice is a full-width zero tensor per block, which made the meta-step backward pass
        about 1.3x slower (benchmarks/meta_train_steps_per_s.py)."""
        return tf.unstack(tf.reshape(state, [-1, 2 * self.num_layers, self.hidden_size]), axis=1)

    def step(self, inputs, parts):
        """One step on the state blocks of :meth:`split_state`: (top-layer output, new blocks)."""
        new_parts = []
        x = inputs
        # sigmoid(z) = (1 + tanh(z / 2)) / 2: one tanh over all four gates, with the halving
        # folded into the (tiny) weights, is ~13% faster per meta step than three sigmoids and a
        # tanh (benchmarks/meta_train_steps_per_s.py) and equal to float rounding.
        scale = self._gate_scale
        for layer, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            h, c = parts[2 * layer], parts[2 * layer + 1]
            t = tf.tanh(tf.matmul(tf.concat([x, h], axis=1), kernel * scale) + bias * scale)
            i, f, g, o = tf.split(t, 4, axis=1)
            c = 0.5 * ((1.0 + f) * c + (1.0 + i) * g)
            h = 0.5 * (1.0 + o) * tf.tanh(c)
            new_parts.extend([h, c])
            x = h
        return x, new_parts


def _forget_bias_one(hidden_size):
    def initializer(shape, dtype=None):
        return tf.concat(
            [
                tf.zeros([hidden_size], dtype),
                tf.ones([hidden_size], dtype),
                tf.zeros([2 * hidden_size], dtype),
            ],
            axis=0,
        )

    return initializer
