"""Where validation chose a step scale at the edge of the grid evaluated: the scale one factor of 2 beyond it.

    python results/flatness_round5_end/grid_edge.py results/flatness_round5_end/general-pes_validation_end_every_family_hi_*_s?_lr*.json

Prints ``TASK SEED SCALE`` (``TASK SEED SCALE best`` for a run's RUN/best rule) per (task, rule) whose
validation-best scale (validation accuracy at step 1,000, as train.generalization_summary --tune_step_scale chooses)
is the smallest or largest of the scales evaluated across the files, so that a run of evaluate.sh at SCALE extends
the grid; nothing when every choice is interior. The files must be one arm's (one glob per arm): two arms' scales
for the same task and seed would be pooled into one grid, so mixing them is refused.
"""

import collections
import json
import re
import sys

scales = collections.defaultdict(dict)  # (task, seed, "best" or "") -> {scale: validation accuracy}
arms = set()
for path in sys.argv[1:]:
    with open(path) as f:
        result = json.load(f)
    for spec, run in result["optimizers"].items():
        arm, seed, best, scale = re.search(r"^(.*)-s(\d+)(/best)?:lr=([0-9.]+)$", spec).groups()
        arms.add(arm)
        accuracy = run["at_step"]["1000"]["validation_accuracy"]["mean"]
        scales[(result["task"], int(seed), "best" if best else "")][float(scale)] = accuracy
if len(arms) > 1:
    sys.exit(f"grid_edge.py: the files hold more than one arm ({', '.join(sorted(arms))}); give one arm's files.")
for (task, seed, best), accuracy in sorted(scales.items()):
    chosen = max(accuracy, key=accuracy.get)
    if chosen in (min(accuracy), max(accuracy)):
        print(task, seed, f"{chosen / 2 if chosen == min(accuracy) else chosen * 2:g}", best)
