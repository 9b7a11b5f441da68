"""l2o_tf: learned optimizers for TensorFlow/Keras."""

__version__ = "0.1.0"

from l2o_tf import data, rules, tasks
from l2o_tf.optimizer import LearnedOptimizer
from l2o_tf import pretrained  # noqa: E402  (needs LearnedOptimizer)
from l2o_tf.callbacks import AdaptOnFit  # noqa: E402
from l2o_tf import export  # noqa: E402  (needs LearnedOptimizer)

__all__ = ["AdaptOnFit", "LearnedOptimizer", "data", "export", "pretrained", "rules", "tasks", "__version__"]
