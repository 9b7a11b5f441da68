"""Exports the candidate checkpoints for selecting `general` on the validation suite (held-out family configurations).

    python results/general_selection/candidates.py   # writes results/general_selection/<label>/ (rule.json, weights.npz)

Candidates: the truncated general run's kept checkpoints (2100, 3000, 6600: the shipped `general` until this
selection) and its last (6875), and the PES fine-tune of 6600 over 1,000-step trajectories at its last checkpoint
(1600 more meta steps). Second round: 2100 and 3000 (the first round's tie) with their step size times 0.5 and 0.7
(``step_mult``: the same as ``LearnedOptimizer(learning_rate=...)``, but carried by the saved rule itself).
Third round: 2100 inside ``HypergradientScale`` (a per-tensor step scale adapted online; rate, min and max scale).
Fourth round: 2100 and 3000 with ``step_horizon`` (the step embedding read at min(t, H)): 2100 was meta-trained
on trajectories of at most 200 steps, 3000 on at most 500.  And the run started from Adam (general_adam_run) at
its checkpoints 450 and 2375 (the nearest to the shipped 2100 of the run started at random).
Fifth round: 2100 fine-tuned over 1,000-step trajectories (general_long_ft) at 1000 and 2000 more meta steps (3000
was planned; the run was stopped at 2551 when 2000 scored below 1000).
Sixth round: weight interpolations between 2100 and its fine-tune ft1000 (WiSE-FT, Wortsman et al. 2022: the
fine-tune fixed the tasks where 2100's step is too large and lost where it is right).
Seventh round, on out-of-family validation (--suite=general_validation_ood): the midpoint of 2100 and 6600 of the
same run (on the suite 6600 beat Adam 1e-3 on 8 tasks and tuned Adam on 3, 2100 on 7 and 5).
"""
import os

from l2o_tf import pretrained
from l2o_tf.pretrained import with_config, with_step_scale
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
    "adam450": ("general_adam_run", "general_adam_run/kept/ckpt-450"),
    "adam2375": ("general_adam_run", "general_adam_run/kept/ckpt-2375"),
    "ft1000": ("general_long_ft", "general_long_ft/kept/ckpt-1000"),
    "ft2000": ("general_long_ft", "general_long_ft/kept/ckpt-2000"),
}
STEP_SCALES = {"at2100_x0.5": ("at2100", 0.5), "at2100_x0.7": ("at2100", 0.7),
               "at3000_x0.5": ("at3000", 0.5), "at3000_x0.7": ("at3000", 0.7)}
HYPERGRADIENT = {"at2100_hg0.02": ("at2100", 0.02, 0.05, 1.0), "at2100_hg0.05": ("at2100", 0.05, 0.05, 1.0),
                 "at2100_hg0.05_max2": ("at2100", 0.05, 0.05, 2.0), "at2100_hg0.1": ("at2100", 0.1, 0.05, 1.0)}

STEP_HORIZONS = {"at2100_h100": ("at2100", 100), "at2100_h200": ("at2100", 200), "at3000_h500": ("at3000", 500)}

SOUPS = {"soup_ft1000_0.25": ("at2100", "ft1000", 0.25), "soup_ft1000_0.5": ("at2100", "ft1000", 0.5),
         "soup_6600_0.5": ("at2100", "at6600", 0.5)}


def interpolated(start, tuned, alpha):
    """``start``'s rule with weights ``(1 - alpha) * start + alpha * tuned`` (the same rule config in both)."""
    if start.get_config() != tuned.get_config():
        raise ValueError("interpolating rules with different configs")
    soup = type(start).from_config(start.get_config())
    for target, a, b in zip(soup.weights, start.weights, tuned.weights):
        target.assign((1.0 - alpha) * a.value + alpha * b.value)
    return soup


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
    for label, (source, horizon) in STEP_HORIZONS.items():
        pretrained.save_rule(with_config(pretrained.load_rule(os.path.join(HERE, source)), step_horizon=horizon),
                             os.path.join(HERE, label))
        print(label, "=", source, "with step_horizon", horizon)
    for label, (start, tuned, alpha) in SOUPS.items():
        soup = interpolated(*(pretrained.load_rule(os.path.join(HERE, name)) for name in (start, tuned)), alpha)
        pretrained.save_rule(soup, os.path.join(HERE, label))
        print(label, "=", f"{1 - alpha:g} x {start} + {alpha:g} x {tuned}")
