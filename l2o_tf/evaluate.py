"""Run an optimizer on a task for N steps x seeds: loss curves and held-out metrics.

Evaluation optimizees use their own seeds (``l2o_tf.seeds.EVALUATION + i``), disjoint
from the seeds meta-training and validation use.
"""

import functools

import numpy as np
import tensorflow as tf

from l2o_tf import seeds
from l2o_tf.meta import regularizers
from l2o_tf.meta import unroll as unroll_lib



def _summary(values):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "values": values.tolist()}


def sharpness(task, params, seed=0, num_iters=20, num_probes=10):
    """Top Hessian eigenvalue, Hutchinson trace and the scale-invariant ``adaptive_trace`` of the training loss
    at ``params`` (fixed batch)."""
    top, trace, adaptive = _sharpness_function(task, num_iters, num_probes)(
        params, task.sharpness_batch(seed), tf.constant(seed, tf.int64)
    )
    return {"hessian_top_eigenvalue": float(top), "hessian_trace": float(trace), "adaptive_trace": float(adaptive)}


@functools.lru_cache(maxsize=None)
def _sharpness_function(task, num_iters, num_probes):
    """One compiled measurement per task (seed and batch are tensors, so seeds do not retrace)."""

    @tf.function
    def measure(params, batch, seed):
        loss_fn = lambda p: task.loss(p, batch)  # noqa: E731
        return (regularizers.hessian_top_eigenvalue(loss_fn, params, num_iters=num_iters, seed=seed),
                regularizers.hessian_trace(loss_fn, params, num_probes=num_probes, seed=seed),
                regularizers.adaptive_trace(loss_fn, params, num_probes=num_probes, seed=seed))

    return measure


def evaluate_rule(rule, task, steps, seeds, report_at=None, measure_sharpness=False, seed_offset=seeds.EVALUATION,
                  progress=None):
    """Optimize ``seeds`` fresh optimizees of ``task`` with ``rule`` for ``steps`` steps.

    Returns a dict with the per-step minibatch training loss (mean / std / min /
    max over seeds) and, at each step count in ``report_at`` (default: the
    last), ``task.evaluate`` metrics (train loss, test loss, test accuracy,
    generalization gap; with ``measure_sharpness`` also the Hessian's top
    eigenvalue and trace) summarised over seeds.  ``progress``: called with the
    number of optimizee steps just run, after each segment (e.g. a Progbar's ``add``).
    """
    if steps < 1 or seeds < 1:
        raise ValueError(f"evaluation needs steps >= 1 and seeds >= 1, got steps={steps}, seeds={seeds}.")
    report_at = sorted(set(report_at or [steps]))
    if report_at[0] < 1 or report_at[-1] > steps:
        raise ValueError(f"report_at {report_at} must lie in [1, steps={steps}].")
    run = tf.function(lambda p, s, seed, start, n: unroll_lib.run(task, rule, p, s, seed, start, n))
    curves, metrics = [], {r: [] for r in report_at}
    for i in range(seeds):
        seed = seed_offset + i
        params = task.init_params(seed)
        state = rule.initial_state(sum(p.shape.num_elements() for p in params))
        done, losses = 0, []
        for target in report_at:
            params, state, segment = run(params, state, tf.constant(seed, tf.int64), tf.constant(done, tf.int64), tf.constant(target - done))
            losses.append(segment.numpy())
            if progress is not None:
                progress(target - done)
            done = target
            result = task.evaluate(params, seed)
            if "test_loss" in result:
                result["generalization_gap"] = result["test_loss"] - result["train_loss"]
            if measure_sharpness:
                result.update(sharpness(task, params, seed))
            metrics[target].append(result)
        curves.append(np.concatenate(losses))
    curves = np.stack(curves)
    out = {
        "steps": steps,
        "seeds": [seed_offset + i for i in range(seeds)],
        "curve": {"mean": curves.mean(0).tolist(), "std": curves.std(0).tolist(),
                  "min": curves.min(0).tolist(), "max": curves.max(0).tolist()},
        "at_step": {
            str(r): {key: _summary([m[key] for m in metrics[r]]) for key in metrics[r][0]} for r in report_at
        },
    }
    if hasattr(task, "data_source"):
        out["data_source"] = task.data_source
    return out
