"""How much the hierarchical rule's per-tensor context moved its update: for each run, the norm of the first MLP
layer's context rows (zero at the warm start from the 2100 rule) against that of its feature rows, and the largest
context-row weight.

    python results/flatness_round5_end/context_use.py runs/round5/hierarchical-pes_*_hi-s?

Prints JSON ``{run: {"context_rows_norm", "feature_rows_norm", "ratio", "max_abs_context"}}``.
"""

import json
import sys

import numpy as np

from l2o_tf.pretrained import load_rule

out = {}
for run in sys.argv[1:]:
    rule = load_rule(run)
    first = np.asarray(rule.kernels[0])
    features, context = first[:-rule.context_size], first[-rule.context_size:]
    out[run] = {"context_rows_norm": float(np.linalg.norm(context)), "feature_rows_norm": float(np.linalg.norm(features)),
                "ratio": float(np.linalg.norm(context) / np.linalg.norm(features)),
                "max_abs_context": float(np.abs(context).max())}
print(json.dumps(out, indent=1))
