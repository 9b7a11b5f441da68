"""Any ``keras.Model`` as an optimizee, through ``Layer.stateless_call``.

The model's trainable weights become the task's parameter tensors; its
non-trainable weights stay at their initial values and it runs with
``training=False`` (no dropout noise, BatchNorm on its moving statistics), so
the loss is a deterministic function of (params, batch) that an unroll can
differentiate.  With ``batch_statistics=True`` it runs with ``training=True``
instead: BatchNorm normalises by each batch's own statistics, as in ``fit``
(still deterministic; the moving statistics are not tracked, so evaluation
normalises each evaluation chunk by its statistics too).
"""

import keras
import numpy as np
import tensorflow as tf

from l2o_tf import seeds
from l2o_tf.tasks.base import Task


class KerasModelTask(Task):
    """A supervised task: a Keras model, a loss, a train split and a held-out test split.

    Args:
        name: task name.
        model_fn: ``seed -> keras.Model`` (built, with weights initialised from ``seed``).
        dataset: ``((x_train, y_train), (x_test, y_test))`` arrays, or a callable
            returning an object with ``x_train, y_train, x_test, y_test`` (and
            optionally ``source``), loaded on first use.
        loss: a Keras loss (object, function or name).
        batch_size: training batch size.
        preprocess: ``x -> float tensor`` applied to gathered batches (e.g. uint8 -> [0, 1]).
        eval_train_examples: how many training examples ``evaluate`` scores (the first ones).
        train_examples: train on only the first ``train_examples`` examples of the train
            split (``None``: all of it): a small-data regime where the optimizee overfits and
            the generalization gap, not training progress, limits test accuracy.
        validation_examples: hold out the last ``validation_examples`` examples of the train split
            as a validation split (never the test split): :meth:`validation_batch` draws from it (the
            validation meta-objective, Metz et al. 2019), ``evaluate`` scores it, and training uses
            the rest (``train_examples`` then counts from its start).
        batch_statistics: run the model with ``training=True`` (BatchNorm on batch statistics).
        classification: whether outputs are class logits (``evaluate`` reports accuracy, per
            element of ``y``: per token for sequence models); False for regression and autoencoders.
    """

    def __init__(
        self,
        name,
        model_fn,
        dataset,
        loss,
        batch_size=128,
        preprocess=None,
        eval_train_examples=10000,
        eval_batch_size=2000,
        train_examples=None,
        validation_examples=0,
        batch_statistics=False,
        classification=True,
    ):
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}.")
        if train_examples is not None and int(train_examples) < 1:
            raise ValueError(f"{name}: train_examples must be >= 1 (or None for the whole train split), got {train_examples}.")
        self.train_examples = None if train_examples is None else int(train_examples)
        if int(validation_examples) < 0:
            raise ValueError(f"{name}: validation_examples must be >= 0, got {validation_examples}.")
        self.validation_examples = int(validation_examples)
        self.name = name
        self.model_fn = model_fn
        self.batch_size = int(batch_size)
        self.loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        self.preprocess = preprocess or (lambda x: tf.cast(x, tf.float32))
        self.eval_train_examples = int(eval_train_examples)
        self.eval_batch_size = int(eval_batch_size)
        self.batch_statistics = bool(batch_statistics)
        self.classification = bool(classification)
        self._dataset = dataset
        self._arrays = None
        self._validation = None
        self._template = None

    # -- data ---------------------------------------------------------------
    @property
    def data_source(self):
        """Where the data came from (recorded in results; flags bundled subsets)."""
        self._load()
        return self._source

    def _load(self):
        if self._arrays is not None:
            return self._arrays
        with tf.init_scope():  # eagerly, even when first used while a tf.function traces (loaders may call .numpy())
            data = self._dataset() if callable(self._dataset) else self._dataset
        if hasattr(data, "x_train"):
            arrays = (data.x_train, data.y_train, data.x_test, data.y_test)
            self._source = getattr(data, "source", "in-memory arrays")
        else:
            (x_train, y_train), (x_test, y_test) = data
            arrays = (x_train, y_train, x_test, y_test)
            self._source = "in-memory arrays"
        x_train, y_train, x_test, y_test = (np.asarray(a) for a in arrays)
        if len(x_train) != len(y_train) or len(x_test) != len(y_test) or len(x_train) == 0:
            raise ValueError(
                f"{self.name}: dataset needs as many labels as inputs in each split and a non-empty "
                f"train split, got x_train {len(x_train)}, y_train {len(y_train)}, "
                f"x_test {len(x_test)}, y_test {len(y_test)}."
            )
        held_out = self.validation_examples
        if held_out and held_out >= len(x_train):
            raise ValueError(f"{self.name}: validation_examples={held_out} leaves no training examples in the train "
                             f"split ({self._source}, {len(x_train)} examples).")
        x_valid, y_valid = x_train[len(x_train) - held_out:], y_train[len(y_train) - held_out:]
        x_train, y_train = x_train[: len(x_train) - held_out], y_train[: len(y_train) - held_out]
        if self.train_examples is not None:
            if self.train_examples > len(x_train):
                raise ValueError(
                    f"{self.name}: train_examples={self.train_examples} but the train split "
                    f"({self._source}) has only {len(x_train)} examples"
                    + (f" once validation_examples={held_out} are held out." if held_out else ".")
                )
            x_train, y_train = x_train[: self.train_examples], y_train[: self.train_examples]
        # Eager tensors (even when first loaded while tracing): captured by reference in
        # tf.function, never baked into graphs.
        with tf.init_scope():
            self._arrays = tuple(tf.convert_to_tensor(a) for a in (x_train, y_train, x_test, y_test))
            self._validation = tuple(tf.convert_to_tensor(a) for a in (x_valid, y_valid)) if held_out else None
        return self._arrays

    @property
    def num_train(self):
        return int(self._load()[0].shape[0])

    def train_batch(self, seed, step):
        """``batch_size`` examples drawn uniformly (with replacement) by a stateless RNG."""
        x_train, y_train, _, _ = self._load()
        key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
        indices = tf.random.stateless_uniform([self.batch_size], key, 0, self.num_train, tf.int32)
        return self.preprocess(tf.gather(x_train, indices)), tf.gather(y_train, indices)

    def validation_batch(self, seed, step):
        """``batch_size`` validation examples (with replacement), from a stream independent of the training batches."""
        self._load()
        if self._validation is None:
            return super().validation_batch(seed, step)
        x_valid, y_valid = self._validation
        key = seeds.validation_batch(seed, step)
        indices = tf.random.stateless_uniform([self.batch_size], key, 0, int(x_valid.shape[0]), tf.int32)
        return self.preprocess(tf.gather(x_valid, indices)), tf.gather(y_valid, indices)

    def sharpness_batch(self, seed=0, size=2000):
        """The first ``size`` training examples: one fixed, larger batch for Hessian measurements."""
        x_train, y_train, _, _ = self._load()
        return self.preprocess(x_train[:size]), y_train[:size]

    # -- model --------------------------------------------------------------
    @property
    def template(self):
        """The model whose ``stateless_call`` computes the loss (its own weights are never used)."""
        if self._template is None:
            self._template = self.model_fn(0)
        return self._template

    def init_params(self, seed):
        # The template too, here: a tf.function that first meets this task after its first trace (the
        # trainer's validation, one function over every family member) could not create its variables.
        self.template  # noqa: B018
        model = self.model_fn(int(seed))
        return [tf.identity(v.value) for v in model.trainable_variables]

    def predict(self, params, x):
        model = self.template
        outputs, _ = model.stateless_call(
            list(params), [v.value for v in model.non_trainable_variables], x, training=self.batch_statistics
        )
        return outputs

    def loss(self, params, batch):
        x, y = batch
        return tf.reduce_mean(self.loss_fn(y, self.predict(params, x)))

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, params, seed=0):
        """Train loss on the first ``eval_train_examples``; test loss and accuracy on the whole test split;
        validation loss and accuracy on the validation split, if the task holds one out."""
        x_train, y_train, x_test, y_test = self._load()
        n_train = min(self.eval_train_examples, self.num_train)
        train_loss, _ = self._score(params, x_train[:n_train], y_train[:n_train])
        test_loss, test_accuracy = self._score(params, x_test, y_test)
        metrics = {"train_loss": train_loss, "test_loss": test_loss, "test_accuracy": test_accuracy}
        if self._validation is not None:
            metrics["validation_loss"], metrics["validation_accuracy"] = self._score(params, *self._validation)
        return metrics

    def _score(self, params, x, y):
        total_loss, correct, count, elements = 0.0, 0.0, 0, 0
        for start in range(0, int(x.shape[0]), self.eval_batch_size):
            loss, hits, n, m = self._score_chunk(
                params, x[start : start + self.eval_batch_size], y[start : start + self.eval_batch_size])
            total_loss += float(loss) * int(n)
            correct += float(hits)
            count += int(n)
            elements += int(m)
        accuracy = correct / elements if elements and self.classification else float("nan")
        return total_loss / max(count, 1), accuracy

    @tf.function(reduce_retracing=True)
    def _score_chunk(self, params, x, y):
        """Mean loss, correct predictions, examples and labels (tokens) of one evaluation chunk."""
        logits = self.predict(params, self.preprocess(x))
        n, labels = tf.shape(x)[0], tf.reshape(y, [-1])
        if self.classification and logits.shape[-1] is not None and logits.shape[-1] > 1:
            predicted = tf.reshape(tf.argmax(logits, axis=-1, output_type=tf.int32), [-1])
            hits = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))
        else:
            hits = tf.constant(float("nan"))
        return tf.reduce_mean(self.loss_fn(y, logits)), hits, n, tf.size(labels)


def from_keras_model(model, dataset, loss, batch_size=128, name=None, **kwargs):
    """Turn a Keras model (or a ``seed -> model`` function) and data into a :class:`KerasModelTask`.

    For a model, ``init_params(seed)`` re-initialises a clone with
    ``keras.utils.set_random_seed(seed)``; the given model's weights are untouched.
    """
    if isinstance(model, keras.Model):
        if not model.built:
            raise ValueError(
                "from_keras_model needs a built model (give it an Input or call it once on data)."
            )
        template = model

        def model_fn(seed):
            keras.utils.set_random_seed(int(seed))
            clone = keras.models.clone_model(template)
            if not clone.built:
                clone.build(template.input_shape)
            return clone

        name = name or model.name
    elif callable(model):
        model_fn = model
        name = name or "keras_model"
    else:
        raise TypeError(f"from_keras_model needs a keras.Model or a seed -> keras.Model function, got {type(model).__name__}.")
    return KerasModelTask(name, model_fn, dataset, loss, batch_size=batch_size, **kwargs)

