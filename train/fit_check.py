r"""One rule, two paths: model.fit with LearnedOptimizer vs the evaluation unroll, on the same batches.

    python -m train.fit_check --optimizer=rnnprop-mnist --steps=1000 --output=results/fit_check.json

Builds the task's Keras model (784-20-10 sigmoid for mnist_mlp), trains it with
``model.fit(..., optimizer=LearnedOptimizer(rule))`` on exactly the batches
``train.evaluate`` uses for the same seed, and records, every --every steps, the
training loss of both parameter sets on that step's batch and their largest difference.
"""

import json
import sys

from train import cli  # noqa: I001  (first: imports TensorFlow quietly)

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from l2o_tf import LearnedOptimizer, spec, tasks
from l2o_tf import seeds
from l2o_tf.meta import unroll as unroll_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("optimizer", "rnnprop-mnist", "Optimizer spec.")
flags.DEFINE_string("task", "mnist_mlp", "A Keras-model task.")
flags.DEFINE_integer("steps", 1000, "Training steps.")
flags.DEFINE_integer("every", 100, "Compare every this many steps.")
flags.DEFINE_string("output", None, "Result JSON path.")


def main(argv):
    if FLAGS.steps < 1 or FLAGS.every < 1:
        raise ValueError("--steps and --every must be >= 1.")
    cli.check_writable(FLAGS.output)
    task = tasks.get(FLAGS.task)
    if not hasattr(task, "model_fn"):
        raise ValueError(f"--task {FLAGS.task!r} is not a Keras-model task.")
    rule = spec.rule_from_spec(FLAGS.optimizer)
    seed = seeds.EVALUATION
    marks = list(range(FLAGS.every, FLAGS.steps + 1, FLAGS.every))

    run = tf.function(lambda p, s, start, n: unroll_lib.run(task, rule, p, s, seed, start, n))
    params = task.init_params(seed)
    state = rule.initial_state(sum(p.shape.num_elements() for p in params))
    unrolled, done = {}, 0
    for mark in marks:
        params, state, _ = run(params, state, tf.constant(done, tf.int64), tf.constant(mark - done))
        unrolled[mark], done = [p.numpy() for p in params], mark

    model = task.model_fn(seed)
    model.compile(optimizer=LearnedOptimizer(rule), loss=task.loss_fn)
    fitted = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in marks:
                fitted[batch + 1] = [w.numpy() for w in model.trainable_weights]

    data = tf.data.Dataset.range(FLAGS.steps).map(lambda t: task.train_batch(seed, t))
    model.fit(data, epochs=1, verbose=0, callbacks=[Record()])

    rows = []
    for mark in marks:
        batch = task.train_batch(seed, mark)
        rows.append({
            "step": mark,
            "loss_unroll": float(task.loss([tf.constant(p) for p in unrolled[mark]], batch)),
            "loss_keras_fit": float(task.loss([tf.constant(p) for p in fitted[mark]], batch)),
            "max_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(unrolled[mark], fitted[mark])),
        })
        print(rows[-1])
    result = {"command": "python -m train.fit_check " + " ".join(sys.argv[1:]), "optimizer": FLAGS.optimizer,
              "task": FLAGS.task, "seed": seed, "rows": rows,
              "max_loss_difference": max(abs(r["loss_unroll"] - r["loss_keras_fit"]) for r in rows),
              "data_source": task.data_source}
    with open(FLAGS.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"max |loss difference| {result['max_loss_difference']:.3g}; wrote {FLAGS.output}")


def run():
    cli.run(main, required=("output",))


if __name__ == "__main__":
    run()
