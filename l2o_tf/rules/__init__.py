"""Update rules: learned (DM-LSTM, RNNprop, AdafacMLP, Hierarchical) and hand-designed (Adam, SGD), one API;
``HypergradientScale`` wraps any of them with an online per-tensor step scale."""

from l2o_tf.rules.adafac_mlp import AdafacMLP, Hierarchical
from l2o_tf.rules.base import UpdateRule
from l2o_tf.rules.baselines import SGD, Adam
from l2o_tf.rules.dm_lstm import DMLSTM, log_and_sign
from l2o_tf.rules.hypergradient import HypergradientScale
from l2o_tf.rules.rnnprop import RNNprop

_BY_NAME = {"dmlstm": DMLSTM, "rnnprop": RNNprop, "adafacmlp": AdafacMLP, "hierarchical": Hierarchical, "adam": Adam, "sgd": SGD}


def names():
    """Rule names accepted by :func:`get`."""
    return sorted(_BY_NAME)


def get(name, **kwargs):
    """Build a rule by name (``dmlstm``, ``rnnprop``, ``adafac_mlp``, ``hierarchical``, ``adam``, ``sgd``)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in _BY_NAME:
        raise ValueError(f"Unknown rule {name!r}; known rules: {', '.join(names())}.")
    return _BY_NAME[key](**kwargs)


__all__ = ["UpdateRule", "AdafacMLP", "Hierarchical", "DMLSTM", "RNNprop", "Adam", "SGD", "HypergradientScale", "log_and_sign", "get", "names"]
