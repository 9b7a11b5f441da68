"""Image-classification optimizees: the L2L MNIST MLP and its unseen variants, MNIST/CIFAR conv nets.

Images stay uint8 in memory and are scaled per batch; weights are initialised
Glorot-uniform from the optimizee seed, so ``init_params(seed)`` is reproducible.
"""

import functools

import keras
import tensorflow as tf

from l2o_tf import data, seeds
from l2o_tf.tasks.keras_model import KerasModelTask

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# Multiplications, not divisions: graph mode rewrites x / c to x * (1 / c), and eager and
# tf.function batches must agree bit for bit.
def scale_mnist(x):
    return tf.cast(x, tf.float32) * (1.0 / 255.0)


def scale_cifar(x):
    mean = tf.constant(CIFAR_MEAN, tf.float32)
    inv_std = tf.constant([1.0 / s for s in CIFAR_STD], tf.float32)
    return (tf.cast(x, tf.float32) * (1.0 / 255.0) - mean) * inv_std


def _seeded(seed, index):
    return keras.initializers.GlorotUniform(seed=seeds.optimizee_weight(seed, index))


def mlp_fn(input_shape, hidden_sizes, activation, num_classes=10):
    """``seed -> model``: Flatten, Dense(h, activation) per hidden size, Dense(num_classes) logits."""

    def build(seed):
        layers = [keras.Input(input_shape), keras.layers.Flatten()]
        for i, size in enumerate(hidden_sizes):
            layers.append(keras.layers.Dense(size, activation=activation, kernel_initializer=_seeded(seed, i)))
        layers.append(keras.layers.Dense(num_classes, kernel_initializer=_seeded(seed, len(hidden_sizes))))
        return keras.Sequential(layers)

    return build


def conv_fn(input_shape, filters, num_classes=10):
    """``seed -> model``: [Conv3x3(f) + ReLU + MaxPool2] per filter count, then Dense logits."""

    def build(seed):
        layers = [keras.Input(input_shape)]
        for i, f in enumerate(filters):
            layers.append(keras.layers.Conv2D(f, 3, activation="relu", kernel_initializer=_seeded(seed, i)))
            layers.append(keras.layers.MaxPooling2D(2))
        layers.append(keras.layers.Flatten())
        layers.append(keras.layers.Dense(num_classes, kernel_initializer=_seeded(seed, len(filters))))
        return keras.Sequential(layers)

    return build


def _task(name, dataset_name, model_fn, preprocess, batch_size, data_dir, **kwargs):
    return KerasModelTask(
        name,
        model_fn,
        functools.partial(data.load, dataset_name, data_dir),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=batch_size,
        preprocess=preprocess,
        **kwargs,
    )


def mnist_mlp(hidden_sizes=(20,), activation="sigmoid", batch_size=128, data_dir=None, name="mnist_mlp", **kwargs):
    """L2L's optimizee: 784-20-10 sigmoid MLP on MNIST, batch 128."""
    return _task(name, "mnist", mlp_fn((28, 28, 1), tuple(hidden_sizes), activation), scale_mnist, batch_size, data_dir, **kwargs)


def mnist_mlp_relu(**kwargs):
    """Unseen variant: 784-20-10 with ReLU."""
    return mnist_mlp(activation="relu", name="mnist_mlp_relu", **kwargs)


def mnist_mlp_deep(**kwargs):
    """Unseen variant: two sigmoid hidden layers, 784-20-20-10."""
    return mnist_mlp(hidden_sizes=(20, 20), name="mnist_mlp_deep", **kwargs)


def mnist_mlp_tanh(**kwargs):
    """Family member (``--task_family``): 784-20-10 with tanh; trained on so that ReLU and depth stay unseen."""
    return mnist_mlp(activation="tanh", name="mnist_mlp_tanh", **kwargs)


def mnist_mlp_elu(**kwargs):
    """Family member: 784-20-10 with ELU, a rectifier with a smooth negative side (ReLU itself stays unseen)."""
    return mnist_mlp(activation="elu", name="mnist_mlp_elu", **kwargs)


def mnist_mlp_wide(**kwargs):
    """Family member: one sigmoid hidden layer twice as wide, 784-40-10 (the depth-2 MLP stays unseen)."""
    return mnist_mlp(hidden_sizes=(40,), name="mnist_mlp_wide", **kwargs)


def mnist_conv(filters=(8, 16), batch_size=128, data_dir=None, **kwargs):
    """Conv net on MNIST: two Conv3x3+ReLU+MaxPool blocks (8, 16 filters), Dense(10)."""
    return _task("mnist_conv", "mnist", conv_fn((28, 28, 1), tuple(filters)), scale_mnist, batch_size, data_dir, **kwargs)


def cifar_conv(filters=(16, 32), batch_size=128, data_dir=None, **kwargs):
    """Conv net on CIFAR-10: two Conv3x3+ReLU+MaxPool blocks (16, 32 filters), Dense(10)."""
    return _task("cifar_conv", "cifar10", conv_fn((32, 32, 3), tuple(filters)), scale_cifar, batch_size, data_dir, **kwargs)
