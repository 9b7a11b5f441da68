"""``--task_family=general``: a broad distribution of optimizees, each a pure function of its seed.

:func:`sample` maps a seed to a :class:`TaskConfig`: an MLP (depth 1-4, width
8-256, relu/tanh/sigmoid/gelu), a conv net (with or without BatchNorm) or an MLP
autoencoder on MNIST or CIFAR-10 at 8x8, 16x16 or full size; or a character-level
RNN (LSTM/GRU) or a small causal transformer language model on CPython's
bundled reference text (:mod:`l2o_tf.tasks.text`); batch sizes 16-512; and
learned_optimization's augmentations (per-tensor parameter rescaling with the
matching reparametrisation, gradient noise).  :func:`family` draws a finite pool
of configs (so each member's meta step is compiled once) and any task, a
``from_keras_model`` one included, can join it.
"""

import dataclasses
import functools
import types

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import data
from l2o_tf.tasks import augment, text
from l2o_tf.tasks.base import TaskFamily
from l2o_tf.tasks.image import scale_cifar, scale_mnist
from l2o_tf.tasks.keras_model import KerasModelTask

KINDS = ("mlp", "conv", "autoencoder", "char_rnn", "transformer_lm")
DATASETS = ("mnist", "cifar10")
RESOLUTIONS = (8, 16, None)  # None: the data set's own (28 or 32)
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
WIDTHS = (8, 16, 32, 64, 128, 256)
_SCALE = {"mnist": scale_mnist, "cifar10": scale_cifar}


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """One sampled optimizee.  ``hidden``: layer widths (filters for conv, units for the sequence models);
    ``param_decades``: parameters rescaled by up to ``10^±param_decades`` per tensor (0: off);
    ``gradient_noise``: stddev of the noise added to gradients (0: off)."""

    kind: str
    seed: int
    dataset: str = "text"
    resolution: int = None
    batch_size: int = 128
    hidden: tuple = ()
    activation: str = "relu"
    batch_norm: bool = False
    cell: str = "lstm"
    seq_len: int = 32
    param_decades: float = 0.0
    gradient_noise: float = 0.0

    @property
    def name(self):
        """A readable, unique name (it also keys compiled steps and results)."""
        parts = [f"general{self.seed}", self.kind]
        if self.kind in ("mlp", "conv", "autoencoder"):
            parts += [self.dataset, f"{self.resolution or 'full'}px", self.activation]
        else:
            parts += [self.cell if self.kind == "char_rnn" else "attn", f"len{self.seq_len}"]
        parts += ["x".join(map(str, self.hidden)), f"b{self.batch_size}"]
        if self.batch_norm:
            parts.append("bn")
        if self.param_decades:
            parts.append(f"rescale{self.param_decades:g}")
        if self.gradient_noise:
            parts.append(f"noise{self.gradient_noise:.0e}")
        return "-".join(parts)


def sample(seed):
    """The :class:`TaskConfig` of ``seed`` (numpy's seeded generator: the same on every machine)."""
    rng = np.random.default_rng([int(seed), 0x6E4E])
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    kind = pick(KINDS)
    fields = dict(kind=kind, seed=int(seed), batch_size=pick(BATCH_SIZES))
    if kind in ("mlp", "conv", "autoencoder"):
        fields.update(dataset=pick(DATASETS), resolution=pick(RESOLUTIONS), activation=pick(ACTIVATIONS))
    if kind == "mlp":
        fields["hidden"] = tuple(pick(WIDTHS) for _ in range(int(rng.integers(1, 5))))
    elif kind == "conv":
        fields.update(hidden=tuple(pick((4, 8, 16, 32)) for _ in range(int(rng.integers(1, 4)))),
                      batch_norm=bool(rng.integers(2)), activation=pick(("relu", "gelu", "tanh")))
    elif kind == "autoencoder":
        width = pick(WIDTHS[2:])
        fields["hidden"] = (width, pick(tuple(w for w in WIDTHS if w < width)))
    else:
        fields.update(hidden=(pick((16, 32, 64)),), seq_len=pick((16, 32)), batch_size=pick(BATCH_SIZES[:4]))
        if kind == "char_rnn":
            fields["cell"] = pick(("lstm", "gru"))
    # Augmentations, each on about a third of the tasks.
    if rng.uniform() < 1 / 3:
        fields["param_decades"] = float(pick((0.5, 1.0, 1.5)))
    if rng.uniform() < 1 / 3:
        fields["gradient_noise"] = float(10.0 ** rng.uniform(-4, -2))
    return TaskConfig(**fields)


# -- data --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def images(name, resolution, data_dir):
    """``name`` with images area-resized to ``resolution`` (uint8 again: batches are cast per step)."""
    full = data.load(name, data_dir)
    if resolution is None:
        return full

    def resize(x):
        out = [tf.image.resize(x[i : i + 10000], [resolution, resolution], "area") for i in range(0, len(x), 10000)]
        return np.round(tf.concat(out, 0).numpy()).clip(0, 255).astype(np.uint8)

    return types.SimpleNamespace(x_train=resize(full.x_train), y_train=full.y_train, x_test=resize(full.x_test),
                                 y_test=full.y_test, source=f"{full.source}, area-resized to {resolution}x{resolution}")


def _autoencoder_pairs(name, resolution, data_dir):
    pictures = images(name, resolution, data_dir)
    return types.SimpleNamespace(x_train=pictures.x_train, y_train=pictures.x_train, x_test=pictures.x_test,
                                 y_test=pictures.x_test, source=pictures.source)


# -- models --------------------------------------------------------------------------------
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a ``[batch, length, width]`` sequence."""

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=tuple(input_shape[1:]), initializer="random_normal", name="positions")

    def call(self, x):
        return x + self.embeddings[None]


def _image_shape(config):
    size = config.resolution or (28 if config.dataset == "mnist" else 32)
    return (size, size, 1 if config.dataset == "mnist" else 3)


def keras_model(config):
    """The ``keras.Model`` of ``config``, its weights drawn from Keras' current global seed."""
    layers = keras.layers

    def mlp(shape):
        stack = [keras.Input(shape), layers.Flatten()]
        stack += [layers.Dense(w, activation=config.activation) for w in config.hidden]
        return keras.Sequential(stack + [layers.Dense(10)])

    def conv(shape):
        stack, size = [keras.Input(shape)], shape[0]
        for filters in config.hidden:
            stack.append(layers.Conv2D(filters, 3, padding="same", use_bias=not config.batch_norm))
            if config.batch_norm:
                stack.append(layers.BatchNormalization())
            stack.append(layers.Activation(config.activation))
            if size >= 4:
                stack.append(layers.MaxPooling2D(2))
                size //= 2
        return keras.Sequential(stack + [layers.Flatten(), layers.Dense(10)])

    def autoencoder(shape):
        width, code = config.hidden
        return keras.Sequential([
            keras.Input(shape), layers.Flatten(), layers.Dense(width, activation=config.activation),
            layers.Dense(code, activation=config.activation), layers.Dense(width, activation=config.activation),
            layers.Dense(int(np.prod(shape))),
        ])

    def char_rnn():
        cell = layers.LSTM if config.cell == "lstm" else layers.GRU
        return keras.Sequential([
            keras.Input((config.seq_len,), dtype="int32"), layers.Embedding(text.VOCAB_SIZE, config.hidden[0]),
            cell(config.hidden[0], return_sequences=True), layers.Dense(text.VOCAB_SIZE),
        ])

    def transformer():
        width = config.hidden[0]
        tokens = keras.Input((config.seq_len,), dtype="int32")
        x = layers.Embedding(text.VOCAB_SIZE, width)(tokens)
        x = PositionEmbedding()(x)
        attended = layers.MultiHeadAttention(num_heads=2, key_dim=width // 2)(x, x, use_causal_mask=True)
        x = layers.LayerNormalization()(x + attended)
        hidden = layers.Dense(2 * width, activation="gelu")(x)
        x = layers.LayerNormalization()(x + layers.Dense(width)(hidden))
        return keras.Model(tokens, layers.Dense(text.VOCAB_SIZE)(x))

    if config.kind == "char_rnn":
        return char_rnn()
    if config.kind == "transformer_lm":
        return transformer()
    return {"mlp": mlp, "conv": conv, "autoencoder": autoencoder}[config.kind](_image_shape(config))


def _model_fn(config):
    """``seed -> keras.Model`` for ``config`` (weights drawn after ``keras.utils.set_random_seed(seed)``)."""

    def build(seed):
        keras.utils.set_random_seed(int(seed))
        return keras_model(config)

    return build


def _token_ids(x):
    return tf.cast(x, tf.int32)


def build(config, data_dir=None, validation_examples=0):
    """The task of ``config`` (a :class:`TaskConfig`, or a seed to :func:`sample`); ``validation_examples``
    of its training split held out for the validation meta-objective (``KerasModelTask``)."""
    if not isinstance(config, TaskConfig):
        config = sample(config)
    model_fn = _model_fn(config)
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if config.kind in ("char_rnn", "transformer_lm"):
        task = KerasModelTask(config.name, model_fn, functools.partial(text.char_windows, config.seq_len), sparse,
                              batch_size=config.batch_size, preprocess=_token_ids,
                              eval_train_examples=2000, validation_examples=validation_examples)
    elif config.kind == "autoencoder":
        scale = _SCALE[config.dataset]

        def reconstruction(y, outputs):
            target = tf.reshape(scale(y), tf.shape(outputs))
            return tf.reduce_mean(tf.square(outputs - target), axis=-1)

        task = KerasModelTask(config.name, model_fn,
                              functools.partial(_autoencoder_pairs, config.dataset, config.resolution, data_dir),
                              reconstruction, batch_size=config.batch_size, preprocess=scale, classification=False,
                              validation_examples=validation_examples)
    else:
        task = KerasModelTask(config.name, model_fn,
                              functools.partial(images, config.dataset, config.resolution, data_dir), sparse,
                              batch_size=config.batch_size, preprocess=_SCALE[config.dataset],
                              batch_statistics=config.batch_norm, validation_examples=validation_examples)
    task.config = config
    if config.param_decades:
        task = augment.Reparametrized.log_uniform(task, config.seed, config.param_decades)
    if config.gradient_noise:
        task = augment.GradientNoise(task, config.gradient_noise)
    return task


def family(size=16, first_seed=0, data_dir=None, extra_tasks=(), validation_examples=0):
    """A :class:`TaskFamily` of the ``size`` tasks of seeds ``first_seed ...``; ``extra_tasks`` join it
    (for example ``l2o_tf.tasks.from_keras_model(...)`` of the user's own model)."""
    if size < 1 and not extra_tasks:
        raise ValueError(f"the general family needs size >= 1 (or extra tasks), got {size}.")
    builders = [functools.partial(build, sample(first_seed + i), data_dir, validation_examples) for i in range(size)]
    builders += [lambda task=task: task for task in extra_tasks]
    return TaskFamily(f"general[{first_seed}:{first_seed + size}]", builders)
