#!/usr/bin/env bash
# Flatness round 5 (docs/flatness.md): evaluate every arm's meta-seeds, the shipped dmlstm-mnist they all start
# from, and Adam over a grid of learning rates on MNIST trained on 1,000 examples, with a 5,000-example
# validation split (held out of the training data) on which Adam's learning rate is chosen.
# Usage: bash results/flatness_round5/evaluate.sh TASK GROUP   (GROUP: a name below)
set -euo pipefail
TASK=$1; GROUP=$2
R=runs/round5
case $GROUP in
  adam)       SPECS="adam:lr=1e-3,adam:lr=3e-3,adam:lr=1e-2,adam:lr=3e-2" ;;
  shipped)    SPECS="dmlstm-mnist" ;;
  *)          SPECS="$R/dmlstm-$GROUP-s0,$R/dmlstm-$GROUP-s1,$R/dmlstm-$GROUP-s2" ;;
esac
exec python -m train.evaluate --optimizer=$SPECS --task=$TASK \
    --task_kwargs=train_examples=1000,validation_examples=5000 --steps=1000 --seeds=10 \
    --output=results/flatness_round5/${GROUP}_${TASK}.json
