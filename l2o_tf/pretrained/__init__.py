"""Shipped meta-trained optimizers, and the on-disk format shared with meta-training runs.

A saved rule is a directory with ``rule.json`` (the Keras-serialised rule
config) and ``weights.npz`` (its weights in ``rule.weights`` order); shipped
ones add ``training.json`` (the config, command and time that produced them).
A meta-training ``out_dir`` holds one under ``out_dir/optimizer``.
"""

import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from l2o_tf.optimizer import LearnedOptimizer

HERE = os.path.dirname(os.path.abspath(__file__))


def names():
    """Names of the shipped optimizers."""
    return sorted(d for d in os.listdir(HERE) if os.path.exists(os.path.join(HERE, d, "rule.json")))


def save_rule(rule, directory, training=None):
    """Write ``rule`` to ``directory`` (atomically per file)."""
    os.makedirs(directory, exist_ok=True)
    _write(os.path.join(directory, "rule.json"), json.dumps(keras.saving.serialize_keras_object(rule), indent=2))
    weights_path = os.path.join(directory, "weights.npz")
    with open(weights_path + ".tmp", "wb") as f:
        np.savez(f, *[w.numpy() for w in rule.weights])
    os.replace(weights_path + ".tmp", weights_path)
    if training is not None:
        _write(os.path.join(directory, "training.json"), json.dumps(training, indent=2, sort_keys=True))


def save_validation_best(rule, out_dir, meta_step, validation, trajectory_length):
    """Write a run's validation-best rule to ``out_dir/best``, with the meta step ``provenance`` reports for it."""
    save_rule(rule, os.path.join(out_dir, "best"), training={
        "selected_on": "validation", "meta_step": int(meta_step), "validation": float(validation),
        "trajectory_length": int(trajectory_length)})


def _write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def resolve(name_or_dir):
    """The saved-rule directory for a shipped name, a saved-rule directory or a meta-training out_dir."""
    candidates = [os.path.join(HERE, str(name_or_dir))] if name_or_dir in names() else []
    candidates += [os.path.join(str(name_or_dir), "optimizer"), str(name_or_dir)]
    for directory in candidates:
        if os.path.exists(os.path.join(directory, "rule.json")):
            return directory
    raise ValueError(
        f"Unknown optimizer {name_or_dir!r}: not a shipped optimizer ({', '.join(names()) or 'none'}) "
        "nor a directory holding rule.json (a meta-training out_dir or a saved rule)."
    )


def provenance(name_or_dir):
    """Which weights a name or directory stands for, to record beside results: the saved-rule directory, a digest of
    its weights and, for a meta-training out_dir, the meta step they were saved at and the run's ``meta_steps`` (an
    out_dir evaluated while it still trains is evaluated as it stood, and the record must say so)."""
    directory = resolve(name_or_dir)
    with open(os.path.join(directory, "weights.npz"), "rb") as f:
        record = {"directory": directory, "weights_sha256": hashlib.sha256(f.read()).hexdigest()[:16]}
    run = os.path.dirname(directory)
    if os.path.basename(directory) == "optimizer" and os.path.exists(os.path.join(run, "config.json")):
        with open(os.path.join(run, "config.json")) as f:
            record["meta_steps"] = json.load(f).get("meta_steps")
        latest = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
        record["meta_step"] = int(latest.rsplit("-", 1)[1]) if latest else None
    elif os.path.basename(directory) == "best" and os.path.exists(os.path.join(directory, "training.json")):
        with open(os.path.join(directory, "training.json")) as f:  # a run's validation-best rule
            record["meta_step"] = json.load(f).get("meta_step")
    return record


def load_rule(name_or_dir):
    """The update rule (weights restored) of a shipped name or a directory."""
    directory = resolve(name_or_dir)
    with open(os.path.join(directory, "rule.json")) as f:
        rule = keras.saving.deserialize_keras_object(json.load(f))
    with np.load(os.path.join(directory, "weights.npz")) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(rule.weights) or any(v.shape != tuple(w.shape) for v, w in zip(values, rule.weights)):
        raise ValueError(f"{directory}: weights.npz does not match the rule in rule.json.")
    for weight, value in zip(rule.weights, values):
        weight.assign(value)
    return rule


def with_config(rule, **changes):
    """``rule`` with these config fields changed and its weights kept: an option such as ``step_horizon`` chosen
    after meta-training (the weights must fit the changed config, as they do for options that add none)."""
    changed = type(rule).from_config(dict(rule.get_config(), **changes))
    if [tuple(w.shape) for w in changed.weights] != [tuple(w.shape) for w in rule.weights]:
        raise ValueError(f"Changing {sorted(changes)} changes the rule's weights; it needs meta-training, not a "
                         "config change.")
    for target, source in zip(changed.weights, rule.weights):
        target.assign(source.value)
    return changed


def with_step_scale(rule, scale):
    """``rule`` with every update times ``scale`` (its nominal step field scaled, weights kept): the same as
    ``LearnedOptimizer(rule, learning_rate=scale)``, but carried by the rule, so that an unroll or an export runs it."""
    field, config = getattr(rule, "NOMINAL_STEP_FIELD", None), rule.get_config()
    if field not in config:
        raise ValueError(f"{type(rule).__name__} has no step size in its config to scale; wrap it in "
                         "LearnedOptimizer(rule, learning_rate=...) instead.")
    if not scale > 0:
        raise ValueError(f"A step scale must be > 0, got {scale}.")
    return with_config(rule, **{field: config[field] * float(scale)})


def load(name_or_dir, **optimizer_kwargs):
    """A ready ``LearnedOptimizer``: ``model.compile(optimizer=l2o_tf.pretrained.load("rnnprop-mnist"))``."""
    return LearnedOptimizer(load_rule(name_or_dir), **optimizer_kwargs)


def training_info(name):
    """The training record (config, command, wall time) of a shipped optimizer."""
    with open(os.path.join(resolve(name), "training.json")) as f:
        return json.load(f)
