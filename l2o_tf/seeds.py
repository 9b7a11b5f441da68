"""Every seed stream of l2o_tf in one place, by name, so that no two uses draw the same numbers.

One integer seed names an optimizee (its initial parameters, its problem instance and its
stream of batches).  Meta-training, validation, evaluation and adaptation take their
optimizees from disjoint ranges; the other random draws (weight initialisation, penalty
probes) are derived from a seed and an index by the functions below.
"""

import tensorflow as tf

# First optimizee seed of each use; meta-training's own seeds stay far below VALIDATION.
VALIDATION = 10**9
EVALUATION = 2 * 10**9
ADAPTATION = 3 * 10**9


def training_optimizee(run_seed, index):
    """The ``index``-th training optimizee of meta-training run ``run_seed``."""
    return int(run_seed) * 1_000_003 + int(index)


def rule_weight(rule_seed, weight_index):
    """The initializer seed of a rule's ``weight_index``-th weight."""
    return int(rule_seed) * 1000 + int(weight_index)


def optimizee_weight(optimizee_seed, layer_index):
    """The initializer seed of an image task's ``layer_index``-th layer."""
    return int(optimizee_seed) * 100 + int(layer_index)


def validation_batch(optimizee_seed, step):
    """Stateless seed of optimizee ``optimizee_seed``'s validation batch at ``step`` (independent of its training batches)."""
    return tf.stack([tf.cast(optimizee_seed, tf.int64) * 100_019 + 0x7A11D, tf.cast(step, tf.int64)])


def penalty_step(optimizee_seed, step):
    """The flatness penalty's seed at ``step`` of optimizee ``optimizee_seed`` (tensors in a unroll)."""
    return tf.cast(optimizee_seed, tf.int64) * 100_003 + tf.cast(step, tf.int64)


def probe(seed, probe_index, tensor_index):
    """Stateless seed of a Hessian penalty's ``probe_index``-th random probe, for parameter tensor ``tensor_index``."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(1000 * probe_index + tensor_index, tf.int64)])


def sgld_noise(seed, step, tensor_index):
    """Stateless seed of local entropy's SGLD noise at ``step`` for parameter tensor ``tensor_index``."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(7919 * step + tensor_index, tf.int64)])


def adaptation_round(seed, round_index):
    """The first adaptation optimizee of ``AdaptOnFit``'s ``round_index``-th adaptation."""
    return int(seed) + 1000 * int(round_index)


def estimator_noise(run_seed, meta_step):
    """The int seed of meta step ``meta_step``'s ES/PES perturbations in run ``run_seed``."""
    return int(run_seed) * 1_000_003 + 7 * int(meta_step) + 5


def perturbation(noise_seed, pair):
    """Stateless seed of the ``pair``-th antithetic pair's perturbation of the rule weights (tensors ok)."""
    return tf.stack([tf.cast(noise_seed, tf.int64), tf.cast(pair, tf.int64)])
