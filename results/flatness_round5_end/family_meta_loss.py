"""Mean logged meta-loss per family member, first and second half of meta-training and per 200 meta steps, of a family arm's runs
(docs/flatness.md, round 5 family arms): which member's validation loss dominates the PES meta-gradient.

    python results/flatness_round5_end/family_meta_loss.py > results/flatness_round5_end/family_meta_loss.json
    python results/flatness_round5_end/family_meta_loss.py general-pes_validation_end_log_family_hi \
        > results/flatness_round5_end/log_family_meta_loss.json

Trajectory i trains member i mod 4 (l2o_tf.meta.trainer); a trajectory is 1,000 steps in truncations of 20, so meta
step t (from 1) is on member ((t - 1) // 50) mod 4 (no run skipped an unroll, which would end a trajectory early).
Only scored truncations (optimizee steps 500-1,000) log a meta-loss: each is the held-out-split loss there. A run
meta-trained with --log_loss logs the mean of log losses; its members' figures are exp of that mean (a geometric
mean of the held-out loss, in the loss's units, at most the arithmetic mean the other arm logs).

A run meta-trained with --every_member unrolls every member in every meta step and logs each one's meta-loss as
meta_loss/memberI_NAME, and each one's validation (every 100 meta steps) as validation/memberI_NAME; runs trained
before that logging (c4dd4d9: the every-member arm's meta-seeds 0 and 1) are reported as not logged.

    python results/flatness_round5_end/family_meta_loss.py general-pes_validation_end_every_family_hi \
        > results/flatness_round5_end/every_family_meta_loss.json
    python results/flatness_round5_end/family_meta_loss.py general-pes_validation_end_every_family_xl \
        > results/flatness_round5_end/every_family_xl_meta_loss.json

A run's halves and 200-step blocks are of its own --meta_steps; an *_xl run (a copy of its *_hi run, resumed) reads
both runs' events files, so its figures cover meta steps 1-3,600.
"""

import collections
import glob
import json
import math
import os
import sys

import tensorflow as tf

MEMBERS = ["mnist_mlp", "mnist_mlp_tanh", "mnist_mlp_elu", "mnist_mlp_wide"]
TRUNCATIONS, BLOCK = 50, 200
ARM = sys.argv[1] if len(sys.argv) > 1 else "general-pes_validation_end_family_hi"

out = {"arm": ARM}
for seed in range(6):
    run = f"runs/round5/{ARM}-s{seed}"
    if not os.path.exists(f"{run}/config.json"):
        out[f"s{seed}"] = "not run"
        continue
    with open(f"{run}/config.json") as f:
        config = json.load(f)
    log_loss, every_member = config["unrolling"]["log_loss"], config["distribution"].get("every_member", False)
    meta_steps = config["meta_steps"]
    logged = {}  # (tag, meta step) -> value; a resumed run's later events file wins for steps it logged again
    for events in sorted(glob.glob(f"{run}/tensorboard/events.*")):  # an *_xl run: its *_hi run's file, then its own
        for event in tf.compat.v1.train.summary_iterator(events):
            for value in event.summary.value:
                logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    values, validation = collections.defaultdict(list), collections.defaultdict(dict)
    for (tag, step), loss in sorted(logged.items(), key=lambda item: item[0][1]):
        tag = tag.split("/")
        if tag[0] == "validation" and tag[1].startswith("member"):
            validation[tag[1].split("_", 1)[1]][step] = loss
        if tag[0] == "meta_loss" and (len(tag) == 2) == every_member:
            member = tag[1].split("_", 1)[1] if every_member else MEMBERS[((step - 1) // TRUNCATIONS) % len(MEMBERS)]
            values[(member, "first_half" if step <= meta_steps // 2 else "second_half")].append(loss)
            values[(member, (step - 1) // BLOCK)].append(loss)
    unlog = math.exp if log_loss else (lambda x: x)
    # None where nothing was logged: an *_xl copy of a run trained before per-member logging has its members'
    # figures from meta step 1,201 on only
    mean = lambda v: round(unlog(sum(v) / len(v)), 3) if v else None  # noqa: E731
    if not values:
        out[f"s{seed}"] = "not logged: trained before per-member logging"
        continue
    out[f"s{seed}"] = {m: {h: mean(values[(m, h)]) for h in ("first_half", "second_half")}
                       for m in MEMBERS}
    for m in MEMBERS:  # meta steps 1-200, 201-400, ...: where along meta-training each member's loss moved
        out[f"s{seed}"][m]["per_200_meta_steps"] = [mean(values[(m, b)]) for b in range(meta_steps // BLOCK)]
        if m in validation:  # the trainer's validation on the member's held-out optimizee, per 100 meta steps
            out[f"s{seed}"][m]["validation"] = {step: round(unlog(v), 3) for step, v in sorted(validation[m].items())}
    out[f"s{seed}"]["statistic"] = "exp(mean log loss)" if log_loss else "mean loss"
print(json.dumps(out, indent=1))
