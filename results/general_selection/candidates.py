"""Exports the candidate checkpoints for selecting `general` on the validation suite (held-out family configurations).

    python results/general_selection/candidates.py   # writes results/general_selection/<label>/ (rule.json, weights.npz)

Candidates: the truncated general run's kept checkpoints (2100, 3000, 6600: the shipped `general` until this
selection) and its last (6875), and the PES fine-tune of 6600 over 1,000-step trajectories at its last checkpoint
(1600 more meta steps). Second round: 2100 and 3000 (the first round's tie) with their step size times 0.5 and 0.7
(``step_mult``: the same as ``LearnedOptimizer(learning_rate=...)``, but carried by the saved rule itself).
Third round: 2100 inside ``HypergradientScale`` (a per-tensor step scale adapted online; rate, min and max scale).
"""
import os

from l2o_tf import pretrained
from l2o_tf.rules import HypergradientScale
from train.package_pretrained import rule_at_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.dirname(HERE)
CANDIDATES = {
    "at2100": ("general_run", "general_run/kept/ckpt-2100"),
    "at3000": ("general_run", "general_run/kept/ckpt-3000"),
    "at6600": ("general_run", "general_run/kept/ckpt-6600"),
    "at6875": ("general_run", "general_run/checkpoints/ckpt-6875"),
    "pes1600": ("general_pes", "general_pes/checkpoints/ckpt-1600"),
}
STEP_SCALES = {"at2100_x0.5": ("at2100", 0.5), "at2100_x0.7": ("at2100", 0.7),
               "at3000_x0.5": ("at3000", 0.5), "at3000_x0.7": ("at3000", 0.7)}
HYPERGRADIENT = {"at2100_hg0.02": ("at2100", 0.02, 0.05, 1.0), "at2100_hg0.05": ("at2100", 0.05, 0.05, 1.0),
                 "at2100_hg0.05_max2": ("at2100", 0.05, 0.05, 2.0), "at2100_hg0.1": ("at2100", 0.1, 0.05, 1.0)}


def with_step_scale(rule, scale):
    """``rule`` with its updates times ``scale`` (its ``step_mult`` scaled; the weights unchanged)."""
    config = rule.get_config()
    scaled = type(rule).from_config(dict(config, step_mult=config["step_mult"] * scale))
    for target, source in zip(scaled.weights, rule.weights):
        target.assign(source.value)
    return scaled


if __name__ == "__main__":
    for label, (run, checkpoint) in CANDIDATES.items():
        rule, step = rule_at_checkpoint(pretrained.load_rule(os.path.join(RUNS, run)), os.path.join(RUNS, checkpoint))
        pretrained.save_rule(rule, os.path.join(HERE, label))
        print(label, "meta step", step)
    for label, (source, scale) in STEP_SCALES.items():
        pretrained.save_rule(with_step_scale(pretrained.load_rule(os.path.join(HERE, source)), scale),
                             os.path.join(HERE, label))
        print(label, "=", source, "with step_mult x", scale)
    for label, (source, rate, low, high) in HYPERGRADIENT.items():
        rule = HypergradientScale(pretrained.load_rule(os.path.join(HERE, source)), rate=rate, min_scale=low,
                                  max_scale=high)
        pretrained.save_rule(rule, os.path.join(HERE, label))
        print(label, "=", source, f"in HypergradientScale(rate={rate}, min_scale={low}, max_scale={high})")
