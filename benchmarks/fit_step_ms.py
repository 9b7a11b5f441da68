"""One model.fit train step (batch 128): Keras Adam vs LearnedOptimizer(RNNprop / DM-LSTM / AdafacMLP): per-variable,
fused, fused with the rule step compiled by XLA, and fused with the native kernels."""

import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.timing import emit
from l2o_tf import LearnedOptimizer, rules, suite


def mlp():
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"), keras.layers.Dense(10)])


def conv_1m():
    """A conv net with ~1M parameters (Conv32, Conv64, MaxPool, Dense(96), Dense(10)) on 28x28x1."""
    return keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(96, activation="relu"), keras.layers.Dense(10),
    ])


OPTIMIZERS = {
    "keras_adam": lambda: keras.optimizers.Adam(1e-3),
    # Uncompiled TensorFlow rule steps (jit_compile=False; the default, "auto", compiles them with XLA).
    "rnnprop": lambda: LearnedOptimizer(rules.RNNprop(), jit_compile=False),
    "rnnprop_fused": lambda: LearnedOptimizer(rules.RNNprop(), fused=True, jit_compile=False),
    "dmlstm": lambda: LearnedOptimizer(rules.DMLSTM(), jit_compile=False),
    "dmlstm_fused": lambda: LearnedOptimizer(rules.DMLSTM(), fused=True, jit_compile=False),
    # The rule step compiled with XLA on its own (Keras leaves the train step uncompiled on a CPU).
    "rnnprop_fused_xla": lambda: LearnedOptimizer(rules.RNNprop(), fused=True, jit_compile=True),
    "dmlstm_fused_xla": lambda: LearnedOptimizer(rules.DMLSTM(), fused=True, jit_compile=True),
    # l2o_tf's native fused CPU kernels: the rule's whole step in one kernel.
    "rnnprop_fused_native": lambda: LearnedOptimizer(rules.RNNprop(), fused=True, native_kernel=True),
    "dmlstm_fused_native": lambda: LearnedOptimizer(rules.DMLSTM(), fused=True, native_kernel=True),
    # The per-parameter MLP with Adafactor features: a few hundred FLOPs per parameter.
    "adafac_mlp": lambda: LearnedOptimizer(rules.AdafacMLP(), jit_compile=False),
    "adafac_mlp_fused": lambda: LearnedOptimizer(rules.AdafacMLP(), fused=True, jit_compile=False),
    "adafac_mlp_xla": lambda: LearnedOptimizer(rules.AdafacMLP()),  # the default: per variable, XLA
    "adafac_mlp_fused_xla": lambda: LearnedOptimizer(rules.AdafacMLP(), fused=True, jit_compile=True),
    "adafac_mlp_native": lambda: LearnedOptimizer(rules.AdafacMLP(), native_kernel=True),  # per variable
    # A hidden-2x8 AdafacMLP (the general run's size) with the Adam prior's extra term: an upper bound on the
    # general run's step, as users get it by default.
    "general_rule_xla": lambda: LearnedOptimizer(
        rules.AdafacMLP(hidden_size=8, adam_prior=1.0, zero_init_output=True, exp_mult=0.3), jit_compile=True),
    "general_rule_native": lambda: LearnedOptimizer(
        rules.AdafacMLP(hidden_size=8, adam_prior=1.0, zero_init_output=True, exp_mult=0.3), native_kernel=True),
}


class StepTimer(keras.callbacks.Callback):
    """Wall time of each train step of ``fit``, from its batch's begin to its end callback.

    Not the whole ``fit`` call over its steps: after the last step, the teardown of the
    dataset's iterator sometimes blocks for about one second (seen with every optimizer on
    this machine), which a 10-step fit counted as 100 ms per step."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def suite_conv_bn():
    """The generalization suite's BatchNorm conv net (``conv_bn_cifar16_gap``: 16x16x3 inputs, batch 96 there)."""
    return suite.get("conv_bn_cifar16_gap").model_fn()


def step_ms(build_model, make_optimizer, steps=10, repeats=3, batch=128):
    """Median train-step time over ``repeats`` fits of ``steps`` steps of ``batch`` examples, after one warm-up fit."""
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(optimizer=make_optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    shape = (batch * steps,) + tuple(model.input_shape[1:])
    gen = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (gen.uniform(size=shape).astype("float32"), gen.integers(0, 10, shape[0]))
    ).batch(batch).cache()
    model.fit(data, epochs=1, verbose=0)
    timer = StepTimer()
    for _ in range(repeats):
        model.fit(data, epochs=1, verbose=0, callbacks=[timer])
    return {"ms": 1000 * statistics.median(timer.seconds), "parameters": int(model.count_params())}


def measure(names=tuple(OPTIMIZERS)):
    models = (("mnist_mlp", mlp, 128), ("conv_1m", conv_1m, 128), ("suite_conv_bn", suite_conv_bn, 96))
    return {model_name: {name: step_ms(build, OPTIMIZERS[name], batch=batch) for name in names}
            for model_name, build, batch in models}


if __name__ == "__main__":
    import sys  # noqa: PLC0415

    # python -m benchmarks.fit_step_ms [NAME ...]: only these optimizers (Keras Adam is always timed).
    chosen = sys.argv[1:] and ["keras_adam"] + [n for n in sys.argv[1:] if n != "keras_adam"]
    emit("fit_step_ms", measure(tuple(chosen) if chosen else tuple(OPTIMIZERS)))
