#!/bin/bash
# Fine-tunes the shipped `general` (the general run's meta step 2100, meta-trained on trajectories of at most
# 200 steps) over 1,000-step trajectories, the length users' fits and the suites run: on the suite `general`'s
# curves flatten after 200-300 steps where Adam's keep falling (docs/general.md, fifth validation round).
# Truncated backprop as in the run it continues; a lower meta learning rate for a fine-tune.
cd "$(dirname "$0")/../.."

export TF_CPP_MIN_LOG_LEVEL=2 L2O_DATA_DIR="${L2O_DATA_DIR:-../shared/data}"
exec python -m train.meta_train --task_family=general --family_size=32 --rule=adafac_mlp \
  --rule_kwargs=hidden_size=8 --init_from=results/general_selection/at2100 \
  --estimator=truncated --relative_loss --log_loss --recompute --unroll=10 --curriculum=1000 \
  --meta_steps=200000 --meta_lr=3e-4 --validate_every=300 --validation_seeds=4 --checkpoint_every=100 --seed=0 \
  --out_dir=results/general_long_ft "$@"
