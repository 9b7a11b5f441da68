"""The one abstraction of l2o_tf: an update rule over a flat batch of coordinates.

A rule maps ``(grads, params, state, step)`` to ``(updates, new_state)`` where
``grads`` and ``params`` are float32 vectors ``[n]``, ``state`` is float32
``[n, state_size]`` and ``step`` is the int64 count of updates already applied
(so the first update sees ``step == 0``).  New parameters are
``params + learning_rate * updates``.

The same ``call`` runs inside ``keras.Model.fit`` (through
:class:`l2o_tf.LearnedOptimizer`), inside the meta-training unroll (where it is
differentiated with respect to the rule's weights) and inside an exported
SavedModel.  Keeping it a pure function of tensors is what makes the three
agree to float precision.
"""

import keras
import tensorflow as tf

from l2o_tf import seeds


class UpdateRule(keras.layers.Layer):
    """Base class of update rules: a Keras layer whose weights are created at construction.

    Weights are created in ``__init__`` (their shapes never depend on the
    number of coordinates) from ``seed``, so two rules built with the same
    config hold identical weights, and a rule is ready for ``stateless_call``,
    checkpoints and ``.keras`` files without a first call.
    """

    # Constructor arguments that get_config records (each stored as an attribute of that name).
    CONFIG_FIELDS = ()
    # Fields added after rules were saved, with their defaults: written only when set, so that a rule saved before
    # (and the fingerprint that keys its stored evaluation runs) keeps the same config.
    OPTIONAL_CONFIG_FIELDS = {}
    # Whether the rule has seeded weights (hand-designed rules have none and take no seed).
    SEEDED = True
    # The attribute holding the rule's typical step size (see ``nominal_step``).
    NOMINAL_STEP_FIELD = "output_scale"
    # Whether ``call`` takes ``layout=`` (an ``l2o_tf.rules.layout.Layout``) to compute per-tensor statistics.
    LAYOUT_AWARE = False
    # Whether the whole step has a native CPU kernel (l2o_tf.kernels) that ``kernels.native(whole_rule=True)`` runs.
    NATIVE_STEP = False
    # Whether the rule runs an LSTMStack, whose native kernel (with its gradient) serves meta-training.
    NATIVE_STACK = False

    def __init__(self, seed=0, name=None, **kwargs):
        # Rules always compute in float32: under a mixed-precision policy the
        # gradients are cast up instead of the state being cast down.
        kwargs["dtype"] = "float32"
        super().__init__(name=name, **kwargs)
        self.seed = int(seed)
        self.create_weights()
        self.built = True

    @property
    def state_size(self):
        """Width ``S`` of the per-coordinate state."""
        raise NotImplementedError

    @property
    def nominal_step(self):
        """The rule's typical step size: the step ``weight_decay`` is scaled by, as Keras scales it by lr."""
        return float(getattr(self, self.NOMINAL_STEP_FIELD))

    def create_weights(self):
        """Create the rule's weights (none for hand-designed rules)."""

    def initial_state(self, num_coordinates):
        """State of ``num_coordinates`` fresh coordinates: float32 ``[n, S]`` zeros."""
        return tf.zeros(tf.stack([num_coordinates, self.state_size]), tf.float32)

    def call(self, grads, params, state, step):
        raise NotImplementedError

    def warm_start_from(self, source):
        """Copy the weights of ``source``, a trained rule of the same config (``--init_from``); a ValueError names
        what differs."""
        require_same_config(self, source)
        for weight, value in zip(self.weights, source.weights):
            weight.assign(value)

    def weight_initializer(self, index):
        """Glorot-uniform initializer seeded from the rule seed and a per-weight index."""
        return keras.initializers.GlorotUniform(seed=seeds.rule_weight(self.seed, index))

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.pop("trainable", None)
        if self.SEEDED:
            config["seed"] = self.seed
        config.update({field: getattr(self, field) for field in self.CONFIG_FIELDS})
        config.update({field: getattr(self, field) for field, default in self.OPTIONAL_CONFIG_FIELDS.items()
                       if getattr(self, field) != default})
        return config


def require_same_config(rule, source, ignore=()):
    """Raise a ValueError naming the config fields (beyond seed, name and ``ignore``) where the two rules differ."""
    skip = {"seed", "name", *ignore}
    mine = {k: v for k, v in rule.get_config().items() if k not in skip}
    theirs = {k: v for k, v in source.get_config().items() if k not in skip}
    if mine != theirs:
        different = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"its rule differs from --rule/--rule_kwargs in {', '.join(different)} ({theirs}); "
                         "pass the same rule and kwargs.")


def apply_rule(rule, grads, params, state, step, layout, call=None):
    """``rule``'s step, given the layout of the coordinates if it asks for one (``LAYOUT_AWARE``).

    How every caller runs a rule: ``LearnedOptimizer``, the unroll and the export.  ``call``:
    what runs the step if not ``rule`` itself (its XLA-compiled ``tf.function``).
    """
    call = call or rule
    if getattr(rule, "LAYOUT_AWARE", False):
        return call(grads, params, state, step, layout=layout)
    return call(grads, params, state, step)


def step_count(step):
    """The 1-based float32 step ``t`` used by bias corrections."""
    return tf.cast(step, tf.float32) + 1.0
