"""How optimizers are learned: truncated unrolls (``l2o_tf.meta.unroll``) and the meta-trainer."""

from l2o_tf.meta.config import MetaTrainConfig
from l2o_tf.meta.trainer import MetaTrainer
from l2o_tf.meta.unroll import UnrollConfig

__all__ = ["MetaTrainConfig", "MetaTrainer", "UnrollConfig"]
