"""What an optimizee is: parameters from a seed, a loss of (params, batch), batches, evaluation.

Parameters are a list of tensors, never variables, so that the meta-training
unroll can differentiate through the optimizee's trajectory.  A *seed* names
one optimizee: its initial parameters, its problem instance (synthetic tasks)
and its stream of training batches.  ``train_batch(seed, step)`` uses only
stateless TF ops so that it can run inside a ``tf.function`` with tensor
arguments and gives the same batch for the same ``(seed, step)`` everywhere.
"""

import tensorflow as tf


class Task:
    """An optimizee family member.  Subclasses implement the four methods below."""

    name = "task"

    def init_params(self, seed):
        """Initial parameters of optimizee ``seed``: a list of float32 tensors."""
        raise NotImplementedError

    def loss(self, params, batch):
        """Scalar training loss of ``params`` (list of tensors) on ``batch``."""
        raise NotImplementedError

    def train_batch(self, seed, step):
        """The training batch of optimizee ``seed`` at ``step`` (graph-safe, deterministic)."""
        raise NotImplementedError

    def validation_batch(self, seed, step):
        """A batch from the task's validation split: held out of the *training* data, never the test split
        (the validation meta-objective).  Tasks without one say so."""
        raise ValueError(
            f"task {self.name!r} has no validation split: the validation meta-objective needs a Keras-model task "
            f"whose training split can be held out (validation_examples > 0)."
        )

    def observed_gradients(self, grads, batch):
        """The gradients the optimizer sees on ``batch`` (augmentations add noise; by default the true ones)."""
        return grads

    def evaluate(self, params, seed=0):
        """Python floats: ``train_loss``; for data tasks also ``test_loss``, ``test_accuracy``."""
        raise NotImplementedError

    def sharpness_batch(self, seed=0):
        """A fixed training batch on which sharpness (Hessian trace / top eigenvalue) is measured."""
        return self.train_batch(seed, 0)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class TaskFamily:
    """A distribution over tasks; ``sample(seed)`` draws one (M-L2O, curricula)."""

    def __init__(self, name, builders):
        if not builders:
            raise ValueError(f"TaskFamily {name!r} needs at least one task builder.")
        self.name = name
        self.builders = list(builders)

    def sample(self, seed):
        """The task for ``seed``; the same seed always gives the same task."""
        index = int(tf.random.stateless_uniform([], [int(seed), 7], 0, len(self.builders), tf.int32))
        return self.builders[index]()

    def __len__(self):
        return len(self.builders)


def stateless_seed(seed, salt):
    """A stateless-RNG seed pair from an optimizee seed (int or int tensor) and a salt."""
    return tf.stack([tf.cast(seed, tf.int64), tf.constant(salt, tf.int64)])
