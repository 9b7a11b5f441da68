"""SavedModel export: serve an update rule to any TensorFlow program, no l2o_tf needed.

The SavedModel has two signatures over flat float32 coordinate vectors, the
same for every rule (``S`` = the rule's per-coordinate state width):

* ``init_state(params: float32[None]) -> {"state": float32[None, S]}``
* ``step(grads: float32[None], params: float32[None], state: float32[None, S],
  iteration: int64[]) -> {"updates": float32[None], "state": float32[None, S]}``;
  the new parameters are ``params + updates`` and ``iteration`` counts the
  updates already applied (0 for the first).

``assets/l2o_tf_export.json`` records the rule config, ``S``, the nominal step, the layout of
the coordinates for layout-aware rules (their ``step`` takes exactly those), the l2o_tf
version and the export format version.  :func:`load_saved_model` wraps an
export as a ``LearnedOptimizer`` that runs the exported functions.
"""

import json
import os

import keras
import tensorflow as tf

from l2o_tf import __version__
from l2o_tf.optimizer import LearnedOptimizer
from l2o_tf.rules.base import UpdateRule, apply_rule
from l2o_tf.rules.layout import Layout

FORMAT_VERSION = 1
METADATA = "l2o_tf_export.json"


class ExportError(ValueError):
    """An export directory that cannot be used: missing, corrupt, or from a newer format."""


class _RuleModule(tf.Module):
    def __init__(self, rule, layout):
        super().__init__(name="l2o_tf_rule")
        # Keras 3 variables are not tracked through a tf.Module attribute holding the layer:
        # track the underlying tf.Variables so that the SavedModel stores them.
        self.rule_variables = [w.value for w in rule.weights]
        state_size = rule.state_size

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="params")])
        def init_state(params):
            return {"state": rule.initial_state(tf.shape(params)[0])}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="grads"),
                tf.TensorSpec([None], tf.float32, name="params"),
                tf.TensorSpec([None, state_size], tf.float32, name="state"),
                tf.TensorSpec([], tf.int64, name="iteration"),
            ]
        )
        def step(grads, params, state, iteration):
            n = tf.shape(params)[0]
            checks = [
                tf.debugging.assert_equal(tf.shape(grads)[0], n, message="step: grads and params must have the same length"),
                tf.debugging.assert_equal(tf.shape(state)[0], n, message="step: state must have one row per coordinate of params"),
            ]
            if layout is not None:
                checks.append(tf.debugging.assert_equal(
                    n, layout.num_coordinates, message="step: params must have as many coordinates as the layout of the export"))
            with tf.control_dependencies(checks):
                updates, new_state = apply_rule(rule, grads, params, state, iteration, layout)
            return {"updates": updates, "state": new_state}

        self.init_state = init_state
        self.step = step


def export_saved_model(optimizer, path, layout=None):
    """Write ``optimizer`` (a ``LearnedOptimizer`` or an ``UpdateRule``) as a SavedModel at ``path``.

    ``layout``: for a layout-aware rule (``AdafacMLP``), the tensors whose flattened, concatenated
    coordinates ``step`` will receive (a model's ``trainable_variables``, their shapes, or a
    :class:`~l2o_tf.rules.layout.Layout`); the export is then for those shapes, recorded in
    its metadata.  Other rules ignore it.
    """
    rule = optimizer.rule if isinstance(optimizer, LearnedOptimizer) else optimizer
    if not isinstance(rule, UpdateRule):
        raise TypeError(f"export_saved_model needs a LearnedOptimizer or an UpdateRule, got {type(optimizer).__name__}.")
    if isinstance(rule, SavedModelRule):
        raise TypeError("this optimizer already runs an export; copy its directory instead of re-exporting it.")
    if rule.LAYOUT_AWARE and layout is None:
        raise ValueError(f"{type(rule).__name__} computes per-tensor statistics: export it with the layout of the "
                         "coordinates it will update, e.g. export_saved_model(rule, path, layout=model.trainable_variables).")
    if layout is not None and not isinstance(layout, Layout):
        layout = Layout(tuple(tuple(getattr(t, "shape", t)) for t in layout))
    layout = layout if rule.LAYOUT_AWARE else None
    module = _RuleModule(rule, layout)
    tf.saved_model.save(module, path, signatures={"init_state": module.init_state, "step": module.step})
    metadata = {
        "format_version": FORMAT_VERSION,
        "l2o_tf_version": __version__,
        "state_size": int(rule.state_size),
        "nominal_step": rule.nominal_step,
        "layout": None if layout is None else layout.to_json(),
        "rule": keras.saving.serialize_keras_object(rule),
    }
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    with open(os.path.join(path, "assets", METADATA), "w") as f:
        json.dump(metadata, f, indent=2)
    return path


def read_metadata(path):
    """The export's metadata, after checking the directory is a usable export."""
    if not os.path.isdir(path):
        raise ExportError(f"no SavedModel export at {path!r}: not a directory.")
    meta_path = os.path.join(path, "assets", METADATA)
    if not os.path.exists(os.path.join(path, "saved_model.pb")) or not os.path.exists(meta_path):
        raise ExportError(f"{path!r} is not an l2o_tf export (missing saved_model.pb or assets/{METADATA}).")
    try:
        with open(meta_path) as f:
            metadata = json.load(f)
        version = int(metadata["format_version"])
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"corrupt export metadata {meta_path}: {e}.") from None
    if version > FORMAT_VERSION:
        raise ExportError(
            f"{path!r} has export format {version}, newer than this l2o_tf ({__version__}) reads "
            f"(format {FORMAT_VERSION}); upgrade l2o_tf."
        )
    return metadata


@keras.saving.register_keras_serializable(package="l2o_tf")
class SavedModelRule(UpdateRule):
    """An update rule that runs an exported SavedModel's ``init_state`` / ``step`` functions."""

    def __init__(self, path, name=None, **kwargs):
        self.export_path = os.fspath(path)  # (Layer.path is the layer's own name path)
        self.metadata = read_metadata(self.export_path)
        try:
            self.loaded = tf.saved_model.load(self.export_path)
        except Exception as e:  # TF raises several types on damaged protobufs / variables
            raise ExportError(f"corrupt SavedModel at {self.export_path!r}: {type(e).__name__}: {str(e)[:200]}") from None
        super().__init__(seed=0, name=name, **kwargs)

    @property
    def state_size(self):
        return self.metadata["state_size"]

    @property
    def nominal_step(self):
        if "nominal_step" in self.metadata:
            return float(self.metadata["nominal_step"])
        config = self.metadata["rule"]["config"]  # exports written before the field: read the rule's config
        return float(config.get("learning_rate", config.get("output_scale")))

    def initial_state(self, num_coordinates):
        return self.loaded.init_state(tf.zeros(tf.reshape(num_coordinates, [1]), tf.float32))["state"]

    def call(self, grads, params, state, step):
        out = self.loaded.step(
            grads=tf.cast(grads, tf.float32), params=tf.cast(params, tf.float32),
            state=state, iteration=tf.cast(step, tf.int64),
        )
        return out["updates"], out["state"]

    SEEDED = False

    def get_config(self):
        config = super().get_config()
        config["path"] = self.export_path
        return config


def load_saved_model(path, **optimizer_kwargs):
    """A ``LearnedOptimizer`` that runs the export at ``path`` (usable in ``model.compile``)."""
    return LearnedOptimizer(SavedModelRule(path), **optimizer_kwargs)
