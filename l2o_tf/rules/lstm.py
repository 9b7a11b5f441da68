"""A coordinatewise stack of LSTM cells, shared by DM-LSTM and RNNprop.

Every coordinate is a batch row; the cells' weights are shared across rows.
The stack's state is stored flat as ``[n, 2 * num_layers * hidden_size]``
(``h`` then ``c`` for each layer) so that it fits the rules' flat state.
"""

import tensorflow as tf


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
    def state_size(self):
        return 2 * self.num_layers * self.hidden_size

    def __call__(self, inputs, state):
        """One step for every row: returns (top-layer output ``[n, H]``, new flat state)."""
        hidden = self.hidden_size
        new_state = []
        x = inputs
        for layer, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            offset = 2 * layer * hidden
            h = state[:, offset : offset + hidden]
            c = state[:, offset + hidden : offset + 2 * hidden]
            z = tf.matmul(tf.concat([x, h], axis=1), kernel) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            new_state.extend([h, c])
            x = h
        return x, tf.concat(new_state, axis=1)


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
