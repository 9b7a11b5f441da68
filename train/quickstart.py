r"""The main job: a shipped learned optimizer trains a Keras MNIST model, next to Adam.

    l2o-quickstart                    # or: python -m train.quickstart
                                      # dmlstm-mnist vs Adam(1e-2), 1000 steps each

Works offline with no data set present: MNIST is searched as l2o_tf.data describes, and the
bundled 6,000-image subset is the loud last resort (the output says so, and how to get the rest).
"""

import json
import time

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import keras
import numpy as np
from absl import flags

import l2o_tf

FLAGS = flags.FLAGS
flags.DEFINE_string("optimizer", "dmlstm-mnist", "Shipped optimizer name or meta-training out_dir.")
flags.DEFINE_float("adam_lr", 1e-2, "Learning rate of the Adam run shown for comparison (0 to skip).")
flags.DEFINE_integer("steps", 1000, "Training steps (batches of 128).")
flags.DEFINE_integer("seed", 0, "Weight-initialisation and shuffling seed.")
flags.DEFINE_string("data_dir", None, "MNIST directory (else L2O_DATA_DIR, caches, bundled subset).")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def mlp(seed):
    """The L2L optimizee as a plain Keras model: 784-20-10, sigmoid."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"), keras.layers.Dense(10)])


def train(optimizer, x, y, x_test, y_test):
    model = mlp(FLAGS.seed)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    order = np.random.default_rng(FLAGS.seed).integers(0, len(x), FLAGS.steps * 128)
    start = time.time()
    history = model.fit(x[order], y[order], batch_size=128, epochs=1, shuffle=False, verbose="auto")
    seconds = time.time() - start
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=2000, verbose=0)
    return {"train_loss_epoch_mean": history.history["loss"][-1], "test_loss": test_loss,
            "test_accuracy": test_accuracy, "seconds": seconds}


def main(argv):
    if FLAGS.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {FLAGS.steps}.")
    if FLAGS.adam_lr < 0:
        raise ValueError(f"--adam_lr must be >= 0 (0 skips Adam), got {FLAGS.adam_lr:g}.")
    if FLAGS.output:
        cli.check_writable(FLAGS.output)
    runs = {FLAGS.optimizer: l2o_tf.pretrained.load(FLAGS.optimizer)}  # a bad name fails before any data loads
    if FLAGS.adam_lr > 0:
        runs[f"keras Adam(lr={FLAGS.adam_lr:g})"] = keras.optimizers.Adam(FLAGS.adam_lr)
    print("Loading MNIST ...", flush=True)
    (x, y), (x_test, y_test) = mnist = l2o_tf.data.load_mnist(FLAGS.data_dir)
    print(f"MNIST from: {mnist.source}")
    notice = cli.subset_notice(mnist)
    if notice:
        print(notice)
    x = x.reshape(len(x), -1).astype("float32") / 255.0
    x_test = x_test.reshape(len(x_test), -1).astype("float32") / 255.0
    results = {"data_source": mnist.source, "data_notice": notice, "steps": FLAGS.steps, "seed": FLAGS.seed,
               "runs": {}}
    for name, optimizer in runs.items():
        print(f"Training the 784-20-10 MLP with {name} for {FLAGS.steps} steps ...", flush=True)
        result = train(optimizer, x, y, x_test, y_test)
        results["runs"][name] = result
    for name, result in results["runs"].items():
        print(f"{name:>28}: test accuracy {result['test_accuracy']:.4f}, test loss {result['test_loss']:.4f} "
              f"after {FLAGS.steps} steps ({result['seconds']:.1f} s)" + ("  [MNIST SUBSET]" if notice else ""))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=1)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
