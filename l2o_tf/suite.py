"""The generalization suite: unseen Keras models trained with ``model.fit``, to judge an optimizer
the way a user meets it.

Every suite task's configuration lies outside ``--task_family=general`` (other widths, depths,
activations, resolutions, batch sizes or architectures: see each task's ``unseen`` note), so an
optimizer meta-trained on that family is judged on models it never saw.  :func:`fit_run` trains
one model with one optimizer through ``model.fit`` and records the per-step minibatch loss,
the held-out metrics and the time per step.  Two validation suites select a general optimizer
without touching this one: :func:`ood_validation_tasks` (drawn outside the family) and
:func:`validation_tasks` (held-out family configurations).
"""

import dataclasses
import functools
import hashlib
import json
import os
import time
import types

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import machine
from l2o_tf.tasks import general, text
from l2o_tf.tasks.image import scale_cifar, scale_mnist

FINAL_WINDOW = 50  # the final training loss is the mean of the last this many steps' minibatch losses


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    """One unseen optimizee: ``model_fn() -> keras.Model`` (built after seeding), its data, loss and batch size."""

    name: str
    unseen: str  # what puts it outside the meta-training family
    model_fn: object
    data_fn: object  # () -> SimpleNamespace(x_train, y_train, x_test, y_test, source), inputs ready for the model
    batch_size: int
    classification: bool = True
    convex: bool = False

    def loss(self):
        if self.classification:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return keras.losses.MeanSquaredError()

    def metrics(self):
        return ["sparse_categorical_accuracy"] if self.classification else []


# -- data (float inputs ready for the model, so AdaptOnFit's unrolls see what fit sees) ------------
@functools.lru_cache(maxsize=8)
def _images(dataset, resolution, data_dir=None, flatten_targets=False):
    raw = general.images(dataset, resolution, data_dir)
    scale = scale_mnist if dataset == "mnist" else scale_cifar
    x_train, x_test = scale(raw.x_train).numpy(), scale(raw.x_test).numpy()
    if flatten_targets:  # an autoencoder: the target is the input, flattened
        return types.SimpleNamespace(x_train=x_train, y_train=x_train.reshape(len(x_train), -1), x_test=x_test,
                                     y_test=x_test.reshape(len(x_test), -1), source=raw.source)
    return types.SimpleNamespace(x_train=x_train, y_train=raw.y_train, x_test=x_test, y_test=raw.y_test,
                                 source=raw.source)


def _text(seq_len):
    return text.char_windows(seq_len)


# -- models ----------------------------------------------------------------------------------
def _mlp(shape, widths, activation, batch_norm=False, outputs=10):
    layers = [keras.Input(shape), keras.layers.Flatten()]
    for width in widths:
        layers.append(keras.layers.Dense(width, use_bias=not batch_norm))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        layers.append(keras.layers.Activation(activation))
    return keras.Sequential(layers + [keras.layers.Dense(outputs)])


def _conv_bn(shape):
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape),
        layers.Conv2D(24, 3, padding="same", use_bias=False), layers.BatchNormalization(), layers.Activation("relu"),
        layers.AveragePooling2D(2),
        layers.Conv2D(48, 3, padding="same", use_bias=False), layers.BatchNormalization(), layers.Activation("relu"),
        layers.AveragePooling2D(2),
        layers.Conv2D(48, 3, padding="same", use_bias=False), layers.BatchNormalization(), layers.Activation("relu"),
        layers.GlobalAveragePooling2D(), layers.Dense(10),
    ])


def _strided_conv(shape):
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape), layers.Conv2D(12, 5, strides=2, padding="same", activation="elu"),
        layers.Conv2D(24, 5, strides=2, padding="same", activation="elu"), layers.Flatten(), layers.Dense(10),
    ])


def _autoencoder(shape):
    layers = keras.layers
    size = int(np.prod(shape))
    return keras.Sequential([
        keras.Input(shape), layers.Flatten(), layers.Dense(96, activation="elu"), layers.Dense(12, activation="elu"),
        layers.Dense(96, activation="elu"), layers.Dense(size),
    ])


def _lstm_lm(seq_len, units):
    layers = keras.layers
    return keras.Sequential([
        keras.Input((seq_len,), dtype="int32"), layers.Embedding(text.VOCAB_SIZE, units),
        layers.LSTM(units, return_sequences=True), layers.Dense(text.VOCAB_SIZE),
    ])


def _transformer_lm(seq_len, width, blocks, heads):
    layers = keras.layers
    tokens = keras.Input((seq_len,), dtype="int32")
    x = general.PositionEmbedding()(layers.Embedding(text.VOCAB_SIZE, width)(tokens))
    for _ in range(blocks):
        attended = layers.MultiHeadAttention(num_heads=heads, key_dim=width // heads)(x, x, use_causal_mask=True)
        x = layers.LayerNormalization()(x + attended)
        x = layers.LayerNormalization()(x + layers.Dense(width)(layers.Dense(4 * width, activation="relu")(x)))
    return keras.Model(tokens, layers.Dense(text.VOCAB_SIZE)(x))


def tasks(data_dir=None):
    """The suite (10 tasks), in report order; no batch size or configuration is one the family samples.  Sizes keep a whole suite run (10 tasks x 23 runs of
    1,000 steps) to about an hour on 2 CPU cores, with per-coordinate LSTM baselines in it."""
    mnist = functools.partial(_images, "mnist", None, data_dir)
    mnist14 = functools.partial(_images, "mnist", 14, data_dir)
    cifar8 = functools.partial(_images, "cifar10", 8, data_dir)
    cifar16 = functools.partial(_images, "cifar10", 16, data_dir)
    return [
        SuiteTask("logreg_mnist14", "convex (softmax regression), 14x14 MNIST, batch 100",
                  lambda: _mlp((14, 14, 1), (), "linear"), mnist14, 100, convex=True),
        SuiteTask("mlp_mnist_40x2_elu", "width 40, elu, batch 100", lambda: _mlp((28, 28, 1), (40, 40), "elu"),
                  mnist, 100),
        SuiteTask("mlp_cifar8_48x6_swish", "depth 6, width 48, swish, batch 48",
                  lambda: _mlp((8, 8, 3), (48,) * 6, "swish"), cifar8, 48),
        SuiteTask("mlp_bn_mnist14_100x3", "BatchNorm in an MLP, width 100, batch 200",
                  lambda: _mlp((14, 14, 1), (100, 100, 100), "relu", batch_norm=True), mnist14, 200),
        SuiteTask("conv_bn_cifar16_gap", "24/48/48 filters, BatchNorm, average and global pooling, batch 96",
                  lambda: _conv_bn((16, 16, 3)), cifar16, 96),
        SuiteTask("conv_mnist_5x5_strided_elu", "5x5 strided convolutions, elu, batch 72",
                  lambda: _strided_conv((28, 28, 1)), mnist, 72),
        SuiteTask("autoencoder_mnist14_96_12_elu", "autoencoder 96-12-96, elu, 14x14, batch 80",
                  lambda: _autoencoder((14, 14, 1)), functools.partial(_images, "mnist", 14, data_dir, True), 80,
                  classification=False),
        SuiteTask("mlp_cifar16_40_tanh", "width 40, tanh, 16x16 CIFAR-10, batch 160",
                  lambda: _mlp((16, 16, 3), (40,), "tanh"), cifar16, 160),
        SuiteTask("lstm_lm_48_len40", "LSTM of 48 units, windows of 40, batch 24",
                  lambda: _lstm_lm(40, 48), functools.partial(_text, 40), 24),
        SuiteTask("transformer_lm_2x32_len48", "2 blocks, width 32, 4 heads, windows of 48, batch 12",
                  lambda: _transformer_lm(48, 32, 2, 4), functools.partial(_text, 48), 12),
    ]


VALIDATION_FIRST_SEED = 1000  # the family meta-trains on seeds 0 .. family_size - 1
VALIDATION_MAX_PARAMS = 100_000  # the suite's scale (2k-42k parameters)


@functools.lru_cache(maxsize=4)
def validation_tasks(data_dir=None, count=12):
    """Held-out configurations of ``--task_family=general``: what a general optimizer is *selected* on, so that
    the suite above stays unseen.  The first ``count`` family configurations from seed
    :data:`VALIDATION_FIRST_SEED` whose models have at most :data:`VALIDATION_MAX_PARAMS` parameters, trained
    through ``model.fit`` like the suite; without the family's augmentations (a meta-training device)."""
    out, seed = [], VALIDATION_FIRST_SEED
    while len(out) < count:
        config = dataclasses.replace(general.sample(seed), param_decades=0.0, gradient_noise=0.0)
        seed += 1
        keras.utils.set_random_seed(0)
        if general.keras_model(config).count_params() > VALIDATION_MAX_PARAMS:
            continue
        out.append(_sampled_task(config.name, "a held-out family configuration (validation)",
                                 functools.partial(general.keras_model, config), config.kind,
                                 config.kind in ("char_rnn", "transformer_lm"), config.seq_len, config.dataset,
                                 config.resolution, config.batch_size, data_dir))
    return tuple(out)


def _sampled_task(name, unseen, model_fn, kind, is_text, seq_len, dataset, resolution, batch_size, data_dir):
    """A validation configuration as a :class:`SuiteTask`: text windows or images (the input as the target for an
    autoencoder), whichever suite drew it."""
    autoencoder = kind == "autoencoder"
    data_fn = (functools.partial(_text, seq_len) if is_text
               else functools.partial(_images, dataset, resolution, data_dir, autoencoder))
    return SuiteTask(name, unseen, model_fn, data_fn, batch_size, classification=not autoencoder)


# -- out-of-family validation: every axis the family samples from a set is drawn outside that set -------------
OOD_TEXT_KINDS = ("rnn_lm", "conv_lm", "transformer_lm")
OOD_KINDS = ("deep_mlp", "residual_mlp", "conv", "separable_conv", "autoencoder") + OOD_TEXT_KINDS
OOD_ACTIVATIONS = ("elu", "selu", "softplus", "silu", "leaky_relu", "softsign", "mish")  # none in general.ACTIVATIONS
OOD_RESOLUTIONS = (12, 20, 24)  # the family: 8, 16 and full size
OOD_BATCH_SIZES = (24, 40, 50, 80, 100, 150, 200)  # the family: powers of two
OOD_WIDTHS = (12, 24, 40, 56, 72, 96)  # the family: powers of two
OOD_SEQ_LENS = (24, 40, 64)  # the family: 16 and 32


def _residual_mlp(shape, width, blocks, activation):
    layers = keras.layers
    inputs = keras.Input(shape)
    x = layers.Dense(width)(layers.Flatten()(inputs))
    for _ in range(blocks):  # pre-LayerNorm residual blocks (the family's MLPs have neither)
        x = x + layers.Dense(width)(layers.Dense(2 * width, activation=activation)(layers.LayerNormalization()(x)))
    return keras.Model(inputs, layers.Dense(10)(layers.LayerNormalization()(x)))


def _conv_ood(shape, filters, kernel, strides, activation, batch_norm, separable):
    layers = keras.layers
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    stack = [keras.Input(shape)]
    for count in filters:  # no max pooling (the family pools after every 3x3 layer)
        stack.append(conv(count, kernel, strides=strides, padding="same", use_bias=not batch_norm))
        if batch_norm:
            stack.append(layers.BatchNormalization())
        stack.append(layers.Activation(activation))
    return keras.Sequential(stack + [layers.GlobalAveragePooling2D() if separable else layers.Flatten(),
                                     layers.Dense(10)])


def _rnn_lm(seq_len, units, cell, depth):
    layers = keras.layers
    make = {"simple": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}[cell]
    stack = [keras.Input((seq_len,), dtype="int32"), layers.Embedding(text.VOCAB_SIZE, units)]
    stack += [make(units, return_sequences=True) for _ in range(depth)]
    return keras.Sequential(stack + [layers.Dense(text.VOCAB_SIZE)])


def _conv_lm(seq_len, width, kernel, depth, activation):
    layers = keras.layers
    stack = [keras.Input((seq_len,), dtype="int32"), layers.Embedding(text.VOCAB_SIZE, width)]
    stack += [layers.Conv1D(width, kernel, padding="causal", dilation_rate=2 ** i, activation=activation)
              for i in range(depth)]
    return keras.Sequential(stack + [layers.Dense(text.VOCAB_SIZE)])


def _ood_config(index, attempt):
    """Task ``index``'s configuration (draw ``attempt``): its kind cycles through :data:`OOD_KINDS`, so every
    kind appears; the rest is drawn by numpy's seeded generator (the same on every machine)."""
    rng = np.random.default_rng([int(index), int(attempt), 0x00D])
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    kind = OOD_KINDS[index % len(OOD_KINDS)]
    c = dict(kind=kind, batch_size=pick(OOD_BATCH_SIZES), activation=pick(OOD_ACTIVATIONS),
             dataset=pick(("mnist", "cifar10")), resolution=pick(OOD_RESOLUTIONS), width=pick(OOD_WIDTHS),
             seq_len=pick(OOD_SEQ_LENS))
    if kind == "deep_mlp":
        c["depth"] = int(rng.integers(5, 8))
    elif kind == "residual_mlp":
        c["depth"] = int(rng.integers(2, 5))
    elif kind in ("conv", "separable_conv"):
        c.update(filters=tuple(pick((6, 12, 20, 24, 40)) for _ in range(int(rng.integers(1, 4)))),
                 kernel=pick((5, 7)) if kind == "conv" else 3, strides=pick((1, 2)) if kind == "conv" else 2,
                 batch_norm=bool(rng.integers(2)))
    elif kind == "autoencoder":
        c["code"] = pick((6, 10, 20))
    elif kind == "rnn_lm":
        c.update(cell=pick(("simple", "lstm", "gru")), depth=int(rng.integers(1, 3)))
    elif kind == "conv_lm":
        c.update(kernel=pick((3, 4, 5)), depth=int(rng.integers(2, 4)))
    else:
        c.update(depth=int(rng.integers(1, 4)), heads=pick((1, 4)))
    return c


def _ood_name(index, c):
    kind = c["kind"]
    if kind == "rnn_lm":
        detail = f"{c['cell']}x{c['depth']}"
    elif kind == "conv_lm":
        detail = f"k{c['kernel']}x{c['depth']}-{c['activation']}"
    elif kind == "transformer_lm":
        detail = f"{c['depth']}blocks-{c['heads']}heads"
    elif kind in ("conv", "separable_conv"):
        detail = f"{'x'.join(map(str, c['filters']))}-k{c['kernel']}s{c['strides']}{'-bn' if c['batch_norm'] else ''}"
    elif kind == "autoencoder":
        detail = f"{c['width']}x{c['code']}"
    else:
        detail = f"{c['width']}x{c['depth']}"
    if kind in OOD_TEXT_KINDS:
        return f"ood{index}-{kind}-{detail}-len{c['seq_len']}-{c['width']}-b{c['batch_size']}"
    return f"ood{index}-{kind}-{c['dataset']}-{c['resolution']}px-{c['activation']}-{detail}-b{c['batch_size']}"


def _ood_model_fn(c):
    shape = (c["resolution"], c["resolution"], 1 if c["dataset"] == "mnist" else 3)
    outer = max(c["width"], 4 * c["code"]) if c["kind"] == "autoencoder" else None  # the autoencoder's wide layers
    return {
        "deep_mlp": lambda: _mlp(shape, (c["width"],) * c["depth"], c["activation"]),
        "residual_mlp": lambda: _residual_mlp(shape, c["width"], c["depth"], c["activation"]),
        "conv": lambda: _conv_ood(shape, c["filters"], c["kernel"], c["strides"], c["activation"], c["batch_norm"],
                                  separable=False),
        "separable_conv": lambda: _conv_ood(shape, c["filters"], 3, 2, c["activation"], c["batch_norm"],
                                            separable=True),
        "autoencoder": lambda: _mlp(shape, (outer, c["code"], outer), c["activation"], outputs=int(np.prod(shape))),
        "rnn_lm": lambda: _rnn_lm(c["seq_len"], c["width"], c["cell"], c["depth"]),
        "conv_lm": lambda: _conv_lm(c["seq_len"], c["width"], c["kernel"], c["depth"], c["activation"]),
        "transformer_lm": lambda: _transformer_lm(c["seq_len"], 8 * max(1, c["width"] // 8), c["depth"], c["heads"]),
    }[c["kind"]]


@functools.lru_cache(maxsize=4)
def ood_validation_tasks(data_dir=None, count=10):
    """Out-of-family validation (``--suite=general_validation_ood``): configurations *outside*
    ``--task_family=general`` on every axis it samples from a set (kind, activation, resolution, batch size,
    width, sequence length, kernel size, stride, normalisation), drawn by a seeded sampler and never the suite's
    tasks, so that selecting on them asks what the suite asks, unseen architectures, without looking at it.
    Task ``i`` is the first draw of its kind with at most :data:`VALIDATION_MAX_PARAMS` parameters."""
    out = []
    for index in range(count):
        for attempt in range(100):
            c = _ood_config(index, attempt)
            model_fn = _ood_model_fn(c)
            keras.utils.set_random_seed(0)
            if model_fn().count_params() <= VALIDATION_MAX_PARAMS:
                break
        else:
            raise RuntimeError(f"no {c['kind']} draw under {VALIDATION_MAX_PARAMS} parameters in 100 attempts")
        out.append(_sampled_task(_ood_name(index, c), "an out-of-family configuration (validation)", model_fn,
                                 c["kind"], c["kind"] in OOD_TEXT_KINDS, c["seq_len"], c["dataset"], c["resolution"],
                                 c["batch_size"], data_dir))
    return tuple(out)


SUITES = {"general": tasks, "general_validation": validation_tasks, "general_validation_ood": ood_validation_tasks}


def get(name, data_dir=None, suite="general"):
    """The task called ``name`` of ``suite`` (:data:`SUITES`)."""
    by_name = {t.name: t for t in SUITES[suite](data_dir)}
    if name not in by_name:
        raise ValueError(f"Unknown suite task {name!r} (--suite={suite}); it has: {', '.join(by_name)}.")
    return by_name[name]


class _StepLosses(keras.callbacks.Callback):
    """Each step's own minibatch loss (Keras logs the running mean of the epoch: undo the mean) and time."""

    def __init__(self):
        super().__init__()
        self.losses, self.times, self._total = [], [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)
        running = float(logs["loss"])
        total = running * (batch + 1)
        self.losses.append(total - self._total)
        self._total = total


def _batches(array_x, array_y, batch_size, seed):
    dataset = tf.data.Dataset.from_tensor_slices((array_x, array_y))
    dataset = dataset.shuffle(min(len(array_x), 20000), seed=seed, reshuffle_each_iteration=True)
    return dataset.repeat().batch(batch_size, drop_remainder=True).prefetch(2)


def fit_run(task, make_optimizer, seed, steps, callbacks=(), data=None, test_examples=10000):
    """Train ``task``'s model from seed ``seed`` for ``steps`` steps of ``model.fit`` with ``make_optimizer()``.

    Returns the per-step minibatch losses, the final training loss (mean of the last
    :data:`FINAL_WINDOW`), the test loss (and accuracy) on up to ``test_examples`` test
    examples, and the median seconds per step (the first step, which traces, excluded).
    """
    data = data or task.data_fn()
    keras.utils.set_random_seed(int(seed))
    model = task.model_fn()
    model.compile(optimizer=make_optimizer(), loss=task.loss(), metrics=task.metrics(), jit_compile=False)
    recorder = _StepLosses()
    model.fit(_batches(data.x_train, data.y_train, task.batch_size, seed), steps_per_epoch=steps, epochs=1,
              verbose=0, shuffle=False, callbacks=[recorder, *callbacks])
    scores = model.evaluate(data.x_test[:test_examples], data.y_test[:test_examples], batch_size=1000, verbose=0,
                            return_dict=True)
    losses = np.asarray(recorder.losses)
    out = {
        "losses": losses.tolist(),
        "first_loss": float(losses[0]),
        "final_loss": float(np.mean(losses[-FINAL_WINDOW:])),
        "test_loss": float(scores["loss"]),
        "seconds_per_step": float(np.median(recorder.times[1:])) if steps > 1 else float(recorder.times[0]),
        "diverged": bool(not np.isfinite(losses).all() or np.mean(losses[-FINAL_WINDOW:]) >= losses[0]),
    }
    if "sparse_categorical_accuracy" in scores:
        out["test_accuracy"] = float(scores["sparse_categorical_accuracy"])
    adapters = [c for c in callbacks if hasattr(c, "kept")]
    if adapters:  # AdaptOnFit: whether its guard kept each adaptation (else the run is the unadapted rule's)
        out["adaptation_kept"] = [bool(k) for c in adapters for k in c.kept]
        out["adaptation_decisions"] = [d for c in adapters for d in getattr(c, "decisions", [])]
    return out


# -- the comparison ----------------------------------------------------------------------------
ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DEFAULT_ADAM = 1e-3  # what a user tries first
TUNING_SEED = 1000  # the seed tuned Adam's rate is chosen on; never reported
CURVE_EVERY = 10  # stored curves: the mean of every this many steps


def adam_label(learning_rate):
    return f"adam:lr={learning_rate:g}"


class RunStore:
    """One JSON line per finished run, one file per task, under ``directory``: a suite run that is
    stopped resumes where it was, and a new optimizer joins without re-running the baselines.
    A learned optimizer's runs are keyed by a fingerprint of its weights, so retraining it re-runs them."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._runs = {}

    def _path(self, task):
        return os.path.join(self.directory, f"{task}.jsonl")

    def _load(self, task):
        if task not in self._runs:
            runs = {}
            if os.path.exists(self._path(task)):
                with open(self._path(task)) as f:
                    for line in f:
                        record = json.loads(line)
                        runs[(record["optimizer_key"], record["seed"], record["steps"])] = record
            self._runs[task] = runs
        return self._runs[task]

    def get(self, task, key, seed, steps):
        return self._load(task).get((key, seed, steps))

    def put(self, task, record):
        self._load(task)[(record["optimizer_key"], record["seed"], record["steps"])] = record
        with open(self._path(task), "a") as f:
            f.write(json.dumps(record) + "\n")


def fingerprint(rule):
    """A short hash of a rule's config and weights."""
    digest = hashlib.sha1(json.dumps(rule.get_config(), sort_keys=True, default=str).encode())
    for weight in rule.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def run_machine():
    """The CPU a run was computed on: float rounding differs between CPUs' kernels, and on chaotic tasks (BatchNorm,
    attention) that alone moves a 1,000-step run's final loss by a few percent, so every stored run records it."""
    description = machine.describe()
    return f"{description.get('cpu_model') or description['processor']} ({', '.join(description.get('vector_extensions', []))})"


def _record(task, label, key, seed, steps, result):
    losses = np.asarray(result.pop("losses"))
    usable = len(losses) // CURVE_EVERY * CURVE_EVERY
    curve = losses[:usable].reshape(-1, CURVE_EVERY).mean(1)
    return dict(result, task=task.name, optimizer=label, optimizer_key=key, seed=int(seed), steps=int(steps),
                machine=run_machine(), curve=[float(f"{c:.5g}") for c in curve])


def _mean(records, field):
    values = [r[field] for r in records if field in r]
    return float(np.mean(values)) if values else None


def run_suite(candidates, task_list, store, seeds=3, steps=1000, adapt=None, adapt_kwargs=None, progress=None):
    """Run every suite task with Adam (at :data:`DEFAULT_ADAM` and tuned over :data:`ADAM_GRID` on
    :data:`TUNING_SEED`) and each of ``candidates`` (``{label: () -> rule}``) on seeds ``0 .. seeds-1``;
    with ``adapt`` (a candidate label), that candidate also runs with ``AdaptOnFit``.

    Returns ``{task: {"unseen", "params", "tuned_lr", "tuning": {lr: final loss}, "optimizers":
    {label: {"final_loss", "test_loss", "test_accuracy", "first_loss", "seconds_per_step", "diverged", "runs"}}}}``.
    """
    from l2o_tf.callbacks import AdaptOnFit  # noqa: PLC0415  (callbacks import the meta package)
    from l2o_tf.meta.adaptation import copy_rule  # noqa: PLC0415
    from l2o_tf.optimizer import LearnedOptimizer  # noqa: PLC0415

    rules = {label: make() for label, make in candidates.items()}
    keys = {label: f"{label}@{fingerprint(rule)}" for label, rule in rules.items()}
    out = {}
    for task in task_list:
        data = None

        def run(label, key, make_optimizer, seed, callbacks=lambda data: ()):
            nonlocal data
            record = store.get(task.name, key, seed, steps)
            if record is None:
                data = data or task.data_fn()
                result = fit_run(task, make_optimizer, seed, steps, callbacks=callbacks(data), data=data)
                record = _record(task, label, key, seed, steps, result)
                store.put(task.name, record)
            if progress:
                progress(task.name, label, seed)
            return record

        def adam(lr):
            return lambda: keras.optimizers.Adam(lr)

        tuning = {lr: run(adam_label(lr), adam_label(lr), adam(lr), TUNING_SEED)["final_loss"] for lr in ADAM_GRID}
        tuned_lr = min(ADAM_GRID, key=lambda lr: tuning[lr] if np.isfinite(tuning[lr]) else np.inf)
        arms = {"adam 1e-3": (adam_label(DEFAULT_ADAM), adam(DEFAULT_ADAM), lambda data: ()),
                "adam tuned": (adam_label(tuned_lr), adam(tuned_lr), lambda data: ())}
        for label, rule in rules.items():
            fresh = lambda rule=rule: LearnedOptimizer(copy_rule(rule))  # noqa: E731  (AdaptOnFit changes the rule)
            arms[label] = (keys[label], fresh, lambda data: ())
            if label == adapt:
                kwargs = dict(adapt_kwargs or {})
                arms[f"{label} + AdaptOnFit"] = (
                    keys[label] + "+adapt:" + json.dumps(AdaptOnFit.settings(**kwargs), sort_keys=True), fresh,
                    lambda data, kwargs=kwargs: (AdaptOnFit(data.x_train, data.y_train, batch_size=task.batch_size,
                                                            **kwargs),))
        optimizers = {}
        for label, (key, make, callbacks) in arms.items():
            runs = [run(label, key, make, seed, callbacks) for seed in range(seeds)]
            optimizers[label] = {
                "final_loss": _mean(runs, "final_loss"), "first_loss": _mean(runs, "first_loss"),
                "test_loss": _mean(runs, "test_loss"), "test_accuracy": _mean(runs, "test_accuracy"),
                "seconds_per_step": _mean(runs, "seconds_per_step"),
                "diverged": sum(bool(r["diverged"]) for r in runs), "optimizer_key": key,
                "final_losses": [r["final_loss"] for r in runs],
                "machines": sorted({r.get("machine", "not recorded") for r in runs}),
                **({"adaptation_kept": [r.get("adaptation_kept") for r in runs],
                    "adaptation_choices": [[(d["choice"], d["scale"]) for d in r.get("adaptation_decisions", [])]
                                           for r in runs]}
                   if any("adaptation_kept" in r for r in runs) else {}),
                "curve": np.mean([r["curve"] for r in runs], 0).tolist(),
            }
        keras.utils.set_random_seed(0)
        out[task.name] = {"unseen": task.unseen, "params": int(task.model_fn().count_params()),
                          "batch_size": task.batch_size, "convex": task.convex,
                          "tuned_lr": tuned_lr, "tuning": {f"{lr:g}": v for lr, v in tuning.items()},
                          "data_source": (data or task.data_fn()).source, "optimizers": optimizers}
    return out


def summarize(results, candidate):
    """How ``candidate`` fares against every other arm over the suite (mean final training loss over seeds)."""
    summary = {}
    arms = sorted({label for task in results.values() for label in task["optimizers"]} - {candidate})
    for arm in arms:
        rows = [(t["optimizers"][candidate], t["optimizers"][arm]) for t in results.values() if arm in t["optimizers"]]
        ratios = [c["final_loss"] / b["final_loss"] for c, b in rows]
        accuracy = [(c["test_accuracy"], b["test_accuracy"]) for c, b in rows if c["test_accuracy"] is not None]
        summary[arm] = {
            "tasks": len(rows),
            "candidate_lower_train_loss": sum(c["final_loss"] < b["final_loss"] for c, b in rows) / len(rows),
            "worst_loss_ratio": float(np.max(ratios)), "median_loss_ratio": float(np.median(ratios)),
            "candidate_higher_test_accuracy": (sum(c > b for c, b in accuracy) / len(accuracy)) if accuracy else None,
            "candidate_lower_test_loss": sum(c["test_loss"] < b["test_loss"] for c, b in rows) / len(rows),
        }
    summary["candidate_diverged_runs"] = sum(t["optimizers"][candidate]["diverged"] for t in results.values())
    return summary


def plot_grid(results, path, title):
    """A grid of per-task training curves (mean over seeds), one panel per task."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(results)
    cols = 5
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for label, arm in results[name]["optimizers"].items():
            curve = np.asarray(arm["curve"])
            ax.plot(np.arange(len(curve)) * CURVE_EVERY, curve, label=label, linewidth=1.1)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
