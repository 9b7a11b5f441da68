"""Does a short horizon pick the step size that ends lowest? `general` with its updates times 0.5, 1 and 2
(LearnedOptimizer learning_rate) for 1,000 fit steps on suite tasks, seeds 0 and 1: the final loss (mean of
the last 50 steps) and the mean loss over the first 100, 200 and 500 steps.  Run from the repository root:
L2O_DATA_DIR=../shared/data TF_NUM_INTRAOP_THREADS=1 python results/general_step_scale/scale.py TASKS a
"""
import json, sys
import numpy as np
from l2o_tf import suite, pretrained
from l2o_tf.optimizer import LearnedOptimizer
from l2o_tf.meta.adaptation import copy_rule
names = sys.argv[1].split(",")
rule = pretrained.load_rule("general")
out = {}
for name in names:
    task = suite.get(name)
    data = task.data_fn()
    for scale in (0.5, 1.0, 2.0):
        for seed in (0, 1):
            r = suite.fit_run(task, lambda: LearnedOptimizer(copy_rule(rule), learning_rate=scale), seed, 1000, data=data, test_examples=1000)
            l = np.array(r["losses"])
            out[f"{name}|{scale}|{seed}"] = {"final": r["final_loss"], "m100": float(l[:100].mean()), "m200": float(l[:200].mean()), "m500": float(l[:500].mean())}
            print(name, scale, seed, {k: round(v, 4) for k, v in out[f"{name}|{scale}|{seed}"].items()}, flush=True)
json.dump(out, open(f"results/general_step_scale/scale_{sys.argv[2]}.json", "w"))
