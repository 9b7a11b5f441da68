"""Meta-gradient estimators by name: ``truncated`` (backprop), ``pes``, ``es``, ``maml`` (M-L2O)."""

from l2o_tf.meta.estimators.base import Estimator, Problem, Truncation
from l2o_tf.meta.estimators.es import ES
from l2o_tf.meta.estimators.maml import MAML
from l2o_tf.meta.estimators.pes import PES
from l2o_tf.meta.estimators.truncated import Truncated

NAMES = ("truncated", "pes", "es", "maml")


def get(name, rule, sigma=0.01, maml_config=None):
    """The estimator ``name`` for ``rule``; ``sigma``: ES/PES perturbation scale; ``maml_config``: MAML's inner loop."""
    if name == "truncated":
        return Truncated(rule)
    if name == "pes":
        return PES(rule, sigma)
    if name == "es":
        return ES(rule, sigma)
    if name == "maml":
        if maml_config is None:
            raise ValueError("the maml estimator needs its inner loop (maml_inner_steps >= 1).")
        return MAML(rule, maml_config)
    raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(NAMES)}.")


__all__ = ["Estimator", "Problem", "Truncation", "Truncated", "PES", "ES", "MAML", "NAMES", "get"]
