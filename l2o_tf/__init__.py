"""l2o_tf: learned optimizers for TensorFlow/Keras."""

__version__ = "0.1.0"

from l2o_tf import data, rules, tasks
from l2o_tf.optimizer import LearnedOptimizer

__all__ = ["LearnedOptimizer", "data", "rules", "tasks", "__version__"]
