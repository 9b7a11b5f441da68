"""Write RUN/best for a run meta-trained before the trainer exported its validation-best rule (twelfth stop): the
rule of the checkpoint at the run's lowest logged validation, with the same training.json the trainer writes.

    python results/flatness_round5_end/export_best.py runs/round5/general-pes_validation_end_log_family_hi-s{0..5}

The lowest validation, where the trainer keeps the last that improved by more than 0.1% (the same step for a run that
validated once, as these did). Only for runs of one curriculum stage (the trainer keeps the best of the current trajectory length), whose
validation steps were checkpointed. The round-5 runs validate once, at meta step 1,000, and end at 1,200.
"""

import glob
import json
import sys

import tensorflow as tf

from l2o_tf import pretrained
from train.package_pretrained import rule_at_checkpoint

for run in sys.argv[1:]:
    with open(f"{run}/config.json") as f:
        config = json.load(f)
    if len(config["schedule"]["curriculum"]) != 1:
        raise ValueError(f"{run}: a curriculum of several lengths; its best is per length, not exported here.")
    (events,) = glob.glob(f"{run}/tensorboard/events.*")
    validations = {event.step: float(tf.make_ndarray(value.tensor))
                   for event in tf.compat.v1.train.summary_iterator(events)
                   for value in event.summary.value if value.tag == "validation/mean_loss"}
    step = min(validations, key=lambda s: (validations[s], s))
    rule, saved_step = rule_at_checkpoint(pretrained.load_rule(run), f"{run}/checkpoints/ckpt-{step}")
    assert saved_step == step, (run, step, saved_step)
    pretrained.save_validation_best(rule, run, step, validations[step], config["schedule"]["curriculum"][0])
    print(f"{run}/best: meta step {step}, validation {validations[step]:.4f} (of {sorted(validations.items())})")
