#!/usr/bin/env bash
# Flatness round 5 (docs/flatness.md): evaluate every arm's meta-seeds, the shipped dmlstm-mnist they all start
# from, and Adam over a grid of learning rates on MNIST trained on 1,000 examples, with a 5,000-example
# validation split (held out of the training data) on which Adam's learning rate is chosen.
# Usage: bash results/flatness_round5/evaluate.sh TASK GROUP [SEEDS [SCALES]]   (GROUP: a name below; SEEDS: an arm's
# meta-seeds, default 0,1,2; other seeds write results/flatness_round5_more/GROUP_TASK.json, the *_long arms
# results/flatness_round5_long/GROUP_TASK.json (other seeds: results/flatness_round5_long_more/), apart from the
# first study's files so that each summary command still reads only its own). GROUP general evaluated `general`
# as shipped then, the 2100 rule (results/general_selection/at2100); since 2026-12-03 `general` is the 3000 rule,
# so rerunning that group measures the new one.
# The *_hi and *_xl groups (general start, longer fine-tunes, and their PES twins) write results/flatness_round5_hi/ and also
# report at steps 100-500, to see where along the trajectory test accuracy peaks (adam_hi: Adam's grid, likewise).
# SCALES (e.g. 0.125,0.25,0.5) evaluates each meta-seed at those step scales too (SPEC:lr=X: its updates times X), so
# that a summary with --tune_step_scale can choose each one's scale on validation as Adam's rate is chosen; those
# runs write results/flatness_round5_scaled/GROUP_TASK_sSEEDS.json (the study's grid 0.125,0.25,0.5), or
# GROUP_TASK_sSEEDS_lrSCALES.json for other scales (0.0625: the grid's lower edge). GROUP adam_edge is Adam at
# 3e-4, the lower edge of its grid, into results/flatness_round5_scaled/adam_edge_TASK.json; GROUP adam_fine fills
# that grid in to factors of at most 2 (6e-4, 2e-3, 5e-3, 2e-2; the learned rules' scales are factors of 2 apart) into
# results/flatness_round5_scaled/adam_fine_TASK.json. The scaled-* groups are
# the fine-tunes started from at2100:lr=0.25 (meta_train.sh START=scaled; their scale 1 is the start's 0.25), written
# to results/flatness_round5_scaled_start/ so that the earlier summaries' globs do not take them in; the *_end_hi groups
# (scored over the trajectory's second half) and their *_end_xl continuations likewise to results/flatness_round5_end/
# (evaluate them with SCALES), as are the *_end_family_hi, *_end_log_family_hi and *_every_family_hi arms (meta-trained
# on a family of MLPs) and the *_every_family_xl continuation.
# GROUP general-ARM_best evaluates each meta-seed's validation-best rule (RUN/best: the trainer's export since the
# twelfth stop; results/flatness_round5_end/export_best.py for earlier runs).
# EXAMPLES=all (environment) is the full-data regime (examples.sh): the learned groups come from runs/round5_full/,
# and every file goes to results/flatness_round5_full/ under the name it would have had.
set -euo pipefail
TASK=$1; GROUP=$2; SEEDS=${3:-0,1,2}; SCALES=${4:-}
REPORT=""
source results/flatness_round5/examples.sh
OUT=results/flatness_round5/${GROUP}_${TASK}.json
[ "$SEEDS" != 0,1,2 ] && OUT=results/flatness_round5_more/${GROUP}_${TASK}.json && mkdir -p results/flatness_round5_more
case $GROUP in *_long) DIR=results/flatness_round5_long; [ "$SEEDS" != 0,1,2 ] && DIR=${DIR}_more
                      OUT=$DIR/${GROUP}_${TASK}.json && mkdir -p $DIR ;;
  *_hi|*_xl|*_hi_best|*_xl_best) DIR=results/flatness_round5_hi; [ "$SEEDS" != 0,1,2 ] && DIR=${DIR}_more
        OUT=$DIR/${GROUP}_${TASK}.json REPORT=--report_at=100,200,300,500,1000 && mkdir -p $DIR ;; esac
case $GROUP in
  adam|adam_hi) SPECS="adam:lr=1e-3,adam:lr=3e-3,adam:lr=1e-2,adam:lr=3e-2" ;;  # adam_hi: with the earlier steps
  adam_edge)  SPECS="adam:lr=3e-4" REPORT=--report_at=100,200,300,500,1000 OUT=results/flatness_round5_scaled/adam_edge_${TASK}.json
              mkdir -p results/flatness_round5_scaled ;;
  adam_fine)  SPECS="adam:lr=6e-4,adam:lr=2e-3,adam:lr=5e-3,adam:lr=2e-2" REPORT=--report_at=100,200,300,500,1000  # the grid at factors <= 2
              OUT=results/flatness_round5_scaled/adam_fine_${TASK}.json; mkdir -p results/flatness_round5_scaled ;;
  shipped)    SPECS="dmlstm-mnist" ;;
  general)    SPECS="general"; OUT=results/flatness_round5_long/general_${TASK}.json; mkdir -p results/flatness_round5_long ;;
  general-*_best|hierarchical-*_best) SPECS=$(printf "$RUNS/${GROUP%_best}-s%s/best," ${SEEDS//,/ }); SPECS=${SPECS%,} ;;  # validation-best rules
  general-*|hierarchical-*|scaled-*)  SPECS=$(printf "$RUNS/$GROUP-s%s," ${SEEDS//,/ }); SPECS=${SPECS%,} ;;  # fine-tunes of general
  *)          SPECS=$(printf "$RUNS/dmlstm-$GROUP-s%s," ${SEEDS//,/ }); SPECS=${SPECS%,} ;;
esac
if [ -n "$SCALES" ]; then
  SPECS=$(for spec in ${SPECS//,/ }; do for scale in ${SCALES//,/ }; do printf "%s:lr=%s," $spec $scale; done; done)
  SUFFIX=_lr${SCALES//,/_}; [ "$SCALES" = 0.125,0.25,0.5 ] && SUFFIX=""
  DIR=results/flatness_round5_scaled; case $GROUP in scaled-*) DIR=results/flatness_round5_scaled_start ;;
    *_end_hi|*_end_xl|*_end_family_hi|*_end_log_family_hi|*_end_log_family_hi_best|*_every_family_hi|*_every_family_hi_best|*_every_family_xl|*_every_family_xl_best) DIR=results/flatness_round5_end ;; esac
  SPECS=${SPECS%,}; OUT=$DIR/${GROUP}_${TASK}_s${SEEDS//,/}${SUFFIX}.json
  mkdir -p $DIR
fi
[ $EXAMPLES = all ] && OUT=results/flatness_round5_full/$(basename $OUT) && mkdir -p results/flatness_round5_full
exec python -m train.evaluate --optimizer=$SPECS --task=$TASK \
    --task_kwargs=$EVAL_DATA --steps=1000 --seeds=10 $REPORT \
    --output=$OUT
