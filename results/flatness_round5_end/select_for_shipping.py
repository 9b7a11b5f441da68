"""Which meta-seed and step scale of an arm to ship: the spec with the best mean validation accuracy (the split held
out of the training data, never the test split) at the last reported step, over train.evaluate JSON files of one task.

    python results/flatness_round5_end/select_for_shipping.py ARM_PREFIX FILE [FILE ...]

ARM_PREFIX keeps the specs that start with it (e.g. runs/round5/general-pes_validation_end_xl-s); prints JSON: the
chosen spec, its validation and test accuracy, and every candidate's validation accuracy.
"""

import json
import sys

import numpy as np


def candidates(prefix, paths):
    found = {}
    for path in paths:
        with open(path) as f:
            for spec, run in json.load(f)["optimizers"].items():
                if spec.startswith(prefix):
                    at = run["at_step"][max(run["at_step"], key=int)]
                    found[spec] = (float(np.mean(at["validation_accuracy"]["values"])),
                                   float(np.mean(at["test_accuracy"]["values"])))
    if not found:
        raise SystemExit(f"no spec starting with {prefix!r} in {paths}")
    return found


if __name__ == "__main__":
    found = candidates(sys.argv[1], sys.argv[2:])
    chosen = max(found, key=lambda spec: found[spec][0])
    print(json.dumps({"chosen": chosen, "validation_accuracy": found[chosen][0], "test_accuracy": found[chosen][1],
                      "candidates": {spec: v for spec, (v, _) in sorted(found.items())}}, indent=2))
