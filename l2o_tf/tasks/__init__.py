"""Optimizees by name: ``l2o_tf.tasks.get("mnist_mlp")``; any Keras model via ``from_keras_model``."""

from l2o_tf.tasks import augment, general, text
from l2o_tf.tasks.base import Task, TaskFamily
from l2o_tf.tasks.image import (
    cifar_conv, mnist_conv, mnist_mlp, mnist_mlp_deep, mnist_mlp_elu, mnist_mlp_relu, mnist_mlp_tanh, mnist_mlp_wide,
)
from l2o_tf.tasks.keras_model import KerasModelTask, from_keras_model
from l2o_tf.tasks.synthetic import LeastSquaresTask, Rastrigin, Rosenbrock, lasso, quadratic

_BY_NAME = {
    "quadratic": quadratic,
    "lasso": lasso,
    "rosenbrock": Rosenbrock,
    "rastrigin": Rastrigin,
    "mnist_mlp": mnist_mlp,
    "mnist_mlp_relu": mnist_mlp_relu,
    "mnist_mlp_deep": mnist_mlp_deep,
    "mnist_mlp_tanh": mnist_mlp_tanh,
    "mnist_mlp_elu": mnist_mlp_elu,
    "mnist_mlp_wide": mnist_mlp_wide,
    "mnist_conv": mnist_conv,
    "cifar_conv": cifar_conv,
}


def names():
    """Task names accepted by :func:`get`."""
    return sorted(_BY_NAME)


def get(name, **kwargs):
    """Build a task by name with its keyword arguments (e.g. ``get("lasso", sigma=100)``)."""
    if name not in _BY_NAME:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(names())}.")
    try:
        return _BY_NAME[name](**kwargs)
    except TypeError as e:
        raise TypeError(f"Bad arguments for task {name!r}: {e}") from None


def family(name, sigmas, **kwargs):
    """A :class:`TaskFamily` of task ``name`` over the shift knob ``sigma``."""
    return TaskFamily(f"{name}{list(sigmas)}", [lambda s=s: get(name, sigma=s, **kwargs) for s in sigmas])


def named_family(task_names, **kwargs):
    """A :class:`TaskFamily` of named tasks sharing ``kwargs`` (e.g. MLPs with other activations and widths)."""
    unknown = [n for n in task_names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"Unknown task {unknown[0]!r} in the family; known tasks: {', '.join(names())}.")
    return TaskFamily(",".join(task_names), [lambda n=n: get(n, **kwargs) for n in task_names])


__all__ = [
    "augment", "general", "text", "Task", "TaskFamily", "KerasModelTask", "LeastSquaresTask", "Rosenbrock", "Rastrigin",
    "from_keras_model", "get", "names", "family", "named_family", "quadratic", "lasso", "mnist_mlp",
    "mnist_mlp_relu", "mnist_mlp_deep", "mnist_mlp_tanh", "mnist_mlp_elu", "mnist_mlp_wide", "mnist_conv", "cifar_conv",
]
