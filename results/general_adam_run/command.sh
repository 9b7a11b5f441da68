#!/bin/bash
# `general` meta-training started from Adam: AdafacMLP(adam_prior=1, zero_init_output=true) is Adam at step_mult
# (1e-3) before its first meta step, and meta-training moves it away only where the meta-loss says so.
# Otherwise the command of results/general_run. Stopped and resumed across sessions: run this again to continue.
cd "$(dirname "$0")/../.."

export TF_CPP_MIN_LOG_LEVEL=2 L2O_DATA_DIR="${L2O_DATA_DIR:-../shared/data}"
exec nice -n 19 python -m train.meta_train --task_family=general --family_size=32 --rule=adafac_mlp \
  --rule_kwargs=hidden_size=8,adam_prior=1,zero_init_output=true,exp_mult=0.3 \
  --estimator=truncated --relative_loss --log_loss --recompute --unroll=10 --curriculum=100,200,500 --patience=4 \
  --meta_steps=200000 --meta_lr=1e-3 --validate_every=100 --validation_seeds=4 --checkpoint_every=25 --seed=0 \
  --out_dir=results/general_adam_run "$@"
