"""Hand-designed optimizers written as update rules, so that they are evaluated by the same code
as the learned ones (same unroll, same Keras path, same export)."""

import keras
import tensorflow as tf

from l2o_tf.rules.base import UpdateRule, step_count


def adam_step_size(step, scale, beta_1, beta_2):
    """Adam's step size with both bias corrections folded in, as Keras computes it:
    ``scale * sqrt(1 - beta_2^t) / (1 - beta_1^t)``."""
    t = step_count(step)
    return scale * tf.sqrt(1.0 - tf.pow(beta_2, t)) / (1.0 - tf.pow(beta_1, t))


def adam_step(m, v, step, scale, beta_1, beta_2, epsilon):
    """Adam's step ``scale * m_hat / (sqrt(v_hat) + eps)`` from its raw moments, in Keras's float order
    (bias corrections folded into the step size), for ``Adam`` and for rules that build on Adam."""
    alpha = adam_step_size(step, scale, beta_1, beta_2)
    return (m * alpha) / (tf.sqrt(v) + epsilon)


@keras.saving.register_keras_serializable(package="l2o_tf")
class Adam(UpdateRule):
    """Adam (Kingma & Ba 2015) in the form ``keras.optimizers.Adam`` uses.

    The bias correction is folded into the step size and epsilon is added to
    ``sqrt(v)`` (the paper's "epsilon hat" form), so that
    ``LearnedOptimizer(Adam(...))`` reproduces ``keras.optimizers.Adam``.
    State per coordinate: ``[m, v]``.
    """

    CONFIG_FIELDS = ("learning_rate", "beta_1", "beta_2", "epsilon")
    SEEDED = False
    NOMINAL_STEP_FIELD = "learning_rate"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None, **kwargs):
        if learning_rate <= 0:
            raise ValueError(f"Adam needs learning_rate > 0, got {learning_rate}.")
        if not (0.0 <= beta_1 < 1.0 and 0.0 <= beta_2 < 1.0):
            raise ValueError(f"Adam needs 0 <= beta < 1, got beta_1={beta_1}, beta_2={beta_2}.")
        self.learning_rate = float(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        kwargs.pop("seed", None)
        super().__init__(seed=0, name=name, **kwargs)

    @property
    def state_size(self):
        return 2

    def call(self, grads, params, state, step):
        m, v = state[:, 0], state[:, 1]
        m = m + (grads - m) * (1.0 - self.beta_1)
        v = v + (tf.square(grads) - v) * (1.0 - self.beta_2)
        updates = -adam_step(m, v, step, self.learning_rate, self.beta_1, self.beta_2, self.epsilon)
        return updates, tf.stack([m, v], axis=1)


@keras.saving.register_keras_serializable(package="l2o_tf")
class SGD(UpdateRule):
    """SGD with (Nesterov) momentum, in the form ``keras.optimizers.SGD`` uses.

    ``velocity = momentum * velocity - lr * g``; the update is ``velocity`` (or
    ``momentum * velocity - lr * g`` with Nesterov).  State: ``[velocity]``.
    """

    CONFIG_FIELDS = ("learning_rate", "momentum", "nesterov")
    SEEDED = False
    NOMINAL_STEP_FIELD = "learning_rate"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None, **kwargs):
        if learning_rate <= 0:
            raise ValueError(f"SGD needs learning_rate > 0, got {learning_rate}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD needs 0 <= momentum < 1, got {momentum}.")
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        kwargs.pop("seed", None)
        super().__init__(seed=0, name=name, **kwargs)

    @property
    def state_size(self):
        return 1

    def call(self, grads, params, state, step):
        step_grad = -self.learning_rate * grads
        velocity = self.momentum * state[:, 0] + step_grad
        updates = self.momentum * velocity + step_grad if self.nesterov else velocity
        return updates, velocity[:, None]
