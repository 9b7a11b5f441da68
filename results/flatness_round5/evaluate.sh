#!/usr/bin/env bash
# Flatness round 5 (docs/flatness.md): evaluate every arm's meta-seeds, the shipped dmlstm-mnist they all start
# from, and Adam over a grid of learning rates on MNIST trained on 1,000 examples, with a 5,000-example
# validation split (held out of the training data) on which Adam's learning rate is chosen.
# Usage: bash results/flatness_round5/evaluate.sh TASK GROUP [SEEDS]   (GROUP: a name below; SEEDS: an arm's
# meta-seeds, default 0,1,2; other seeds write results/flatness_round5_more/GROUP_TASK.json, the *_long arms
# results/flatness_round5_long/GROUP_TASK.json (other seeds: results/flatness_round5_long_more/), apart from the
# first study's files so that each summary command still reads only its own). GROUP general evaluated `general`
# as shipped then, the 2100 rule (results/general_selection/at2100); since 2026-12-03 `general` is the 3000 rule,
# so rerunning that group measures the new one.
# The *_hi and *_xl groups (general start, longer fine-tunes, and their PES twins) write results/flatness_round5_hi/ and also
# report at steps 100-500, to see where along the trajectory test accuracy peaks (adam_hi: Adam's grid, likewise).
set -euo pipefail
TASK=$1; GROUP=$2; SEEDS=${3:-0,1,2}
REPORT=""
R=runs/round5
OUT=results/flatness_round5/${GROUP}_${TASK}.json
[ "$SEEDS" != 0,1,2 ] && OUT=results/flatness_round5_more/${GROUP}_${TASK}.json && mkdir -p results/flatness_round5_more
case $GROUP in *_long) DIR=results/flatness_round5_long; [ "$SEEDS" != 0,1,2 ] && DIR=${DIR}_more
                      OUT=$DIR/${GROUP}_${TASK}.json && mkdir -p $DIR ;;
  *_hi|*_xl) DIR=results/flatness_round5_hi; [ "$SEEDS" != 0,1,2 ] && DIR=${DIR}_more
        OUT=$DIR/${GROUP}_${TASK}.json REPORT=--report_at=100,200,300,500,1000 && mkdir -p $DIR ;; esac
case $GROUP in
  adam|adam_hi) SPECS="adam:lr=1e-3,adam:lr=3e-3,adam:lr=1e-2,adam:lr=3e-2" ;;  # adam_hi: with the earlier steps
  shipped)    SPECS="dmlstm-mnist" ;;
  general)    SPECS="general"; OUT=results/flatness_round5_long/general_${TASK}.json; mkdir -p results/flatness_round5_long ;;
  general-*)  SPECS=$(printf "$R/$GROUP-s%s," ${SEEDS//,/ }); SPECS=${SPECS%,} ;;  # fine-tunes of general
  *)          SPECS=$(printf "$R/dmlstm-$GROUP-s%s," ${SEEDS//,/ }); SPECS=${SPECS%,} ;;
esac
exec python -m train.evaluate --optimizer=$SPECS --task=$TASK \
    --task_kwargs=train_examples=1000,validation_examples=5000 --steps=1000 --seeds=10 $REPORT \
    --output=$OUT
