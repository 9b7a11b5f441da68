r"""AdaptOnFit on a model the optimizer never saw: training loss with and without adaptation.

    python -m train.adapt_on_fit_demo --optimizer=rnnprop-mnist --seeds=3 --output=results/adapt_on_fit.json

The model is a 784-64-64-10 ReLU MLP on MNIST (rnnprop-mnist was meta-trained on 784-20-10 sigmoid).
Each seed fits it twice from the same initial weights on the same batches: once with the shipped
optimizer as is, once with AdaptOnFit(steps=--adapt_steps) at the start of fit. Training loss is
recorded every --log_every steps (mean over those steps); test accuracy at the end.
"""

import copy
import json
import os
import sys

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import keras
import numpy as np
from absl import flags

import l2o_tf
from l2o_tf.plots import plot_curves

FLAGS = flags.FLAGS
flags.DEFINE_string("optimizer", "rnnprop-mnist", "Shipped optimizer name or meta-training out_dir.")
flags.DEFINE_integer("steps", 300, "Training steps (batch 128).")
flags.DEFINE_integer("log_every", 10, "Steps per point of the loss curve.")
flags.DEFINE_integer("seeds", 3, "Seeds (initial weights and batch order).")
flags.DEFINE_integer("adapt_steps", 5, "AdaptOnFit steps.")
flags.DEFINE_float("adapt_lr", 1e-3, "AdaptOnFit Adam learning rate.")
flags.DEFINE_string("output", None, "Result JSON path; the plot goes beside it.")


def model_for(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])


def main(argv):
    if FLAGS.steps < FLAGS.log_every or FLAGS.seeds < 1 or FLAGS.adapt_steps < 1:
        raise ValueError("need --steps >= --log_every, --seeds >= 1 and --adapt_steps >= 1.")
    cli.check_writable(FLAGS.output)
    mnist = l2o_tf.data.load_mnist()
    x = mnist.x_train.reshape(len(mnist.x_train), -1).astype("float32") / 255.0
    x_test = mnist.x_test.reshape(len(mnist.x_test), -1).astype("float32") / 255.0
    runs = {"no_adaptation": [], "adapt_on_fit": []}
    accuracy = {"no_adaptation": [], "adapt_on_fit": []}
    for seed in range(FLAGS.seeds):
        order = np.random.default_rng(seed).integers(0, len(x), FLAGS.steps * 128)
        initial = model_for(seed).get_weights()
        for name in runs:
            model = model_for(seed)
            model.set_weights(copy.deepcopy(initial))
            model.compile(optimizer=l2o_tf.pretrained.load(FLAGS.optimizer),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
            callbacks = []
            if name == "adapt_on_fit":
                callbacks.append(l2o_tf.AdaptOnFit(x[order], mnist.y_train[order], steps=FLAGS.adapt_steps,
                                                   learning_rate=FLAGS.adapt_lr, seed=seed))
            history = model.fit(x[order], mnist.y_train[order], batch_size=128, epochs=FLAGS.steps // FLAGS.log_every,
                                steps_per_epoch=FLAGS.log_every, shuffle=False, verbose=0, callbacks=callbacks)
            runs[name].append(history.history["loss"])
            accuracy[name].append(model.evaluate(x_test, mnist.y_test, verbose=0)[1])
    result = {"command": "python -m train.adapt_on_fit_demo " + " ".join(sys.argv[1:]), "optimizer": FLAGS.optimizer,
              "model": "784-64-64-10 ReLU MLP (unseen by the optimizer)", "data_source": mnist.source,
              "data_notice": cli.subset_notice(mnist), "methods": {}}
    for name, curves in runs.items():
        curves = np.asarray(curves)
        result["methods"][name] = {
            "curve": {"mean": curves.mean(0).tolist(), "std": curves.std(0).tolist()},
            "final_loss": {"mean": float(curves[:, -1].mean()), "std": float(curves[:, -1].std())},
            "mean_loss_over_training": {"mean": float(curves.mean()), "per_seed": curves.mean(1).tolist()},
            "test_accuracy": {"mean": float(np.mean(accuracy[name])), "values": accuracy[name]},
        }
        print(name, json.dumps({k: v for k, v in result["methods"][name].items() if k != "curve"}))
    if result["data_notice"]:
        print(result["data_notice"])
    with open(FLAGS.output, "w") as f:
        json.dump(result, f, indent=1)
    plot_curves({k: v["curve"] for k, v in result["methods"].items()}, os.path.splitext(FLAGS.output)[0] + ".png",
                f"{FLAGS.optimizer} on an unseen MLP, mean of {FLAGS.seeds} seeds"
                + cli.subset_title(result["data_notice"]),
                ylabel=f"training loss (mean per {FLAGS.log_every} steps)")


def run():
    cli.run(main, required=("output",))


if __name__ == "__main__":
    run()
