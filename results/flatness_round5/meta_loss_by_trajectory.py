"""Per-trajectory mean meta-loss of round-5 runs, from their TensorBoard logs (docs/flatness.md, PES section).

A run meta-trains over trajectories of ``trajectory / unroll`` meta steps; the mean of ``meta_loss`` over one
trajectory is the objective it optimises, so its first and last trajectories show whether meta-training lowered it.
Usage: python results/flatness_round5/meta_loss_by_trajectory.py OUTPUT.json RUN_DIR...
(results/flatness_round5_pes_meta_loss.json: every runs/round5/general-*_hi-s* and *_xl-s* run.)
"""

import glob
import json
import os
import sys

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator


def trajectory_means(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    curriculum = config["schedule"]["curriculum"]
    if len(curriculum) != 1:  # the stage of each meta step is not in the logs, so trajectories could not be told apart
        raise ValueError(f"{run_dir}: a curriculum of {len(curriculum)} stages {curriculum}; this reads runs with one "
                         "trajectory length.")
    per_trajectory = curriculum[0] // config["unrolling"]["unroll"]
    values = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "**", "events*"), recursive=True)):
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        for event in events.Tensors("meta_loss"):
            values[event.step] = float(tf.make_ndarray(event.tensor_proto))
    steps = sorted(values)
    full = len(steps) // per_trajectory
    means = [float(np.mean([values[s] for s in steps[i * per_trajectory:(i + 1) * per_trajectory]])) for i in range(full)]
    return {"meta_steps": len(steps), "per_trajectory": means,
            "first_3": float(np.mean(means[:3])), "last_3": float(np.mean(means[-3:]))}


if __name__ == "__main__":
    out = {os.path.basename(d.rstrip("/")): trajectory_means(d) for d in sys.argv[2:]}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
    for name, row in out.items():
        print(f"{name}: first 3 trajectories {row['first_3']:.3f}, last 3 {row['last_3']:.3f}")
