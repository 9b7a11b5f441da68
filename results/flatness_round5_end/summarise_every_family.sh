#!/usr/bin/env bash
# Round 5, the every-member family arm (docs/flatness.md, thirteenth stop): general-pes_validation_end_every_family_hi
# is the log-loss family arm meta-trained with --every_member (each meta step one PES antithetic pair per MLP) and
# validated every 100 meta steps on every member. Beside it PES vanilla, the single-task end-scored validation arm
# (1,200 and 3,600 meta steps), the log-loss family arm it changes, and Adam; every learned spec at its
# validation-chosen step scale, Adam at its validation-chosen rate; pairs against vanilla, or another arm with
# --baseline=LABEL.
# WHICH=final (default): each run's rule at meta step 1,200 -> results/flatness_round5_end_every_family_final.json.
# WHICH=selected: each run's rule at its best validation (RUN/best), which is the final rule where the trainer's
# best is meta step 1,200 (its training.json says so; those are not evaluated twice) ->
# results/flatness_round5_end_every_family_selected.json.
# LENGTH=xl: the same for the arm's 3,600-step continuation (pes_validation_end_every_family_xl; final = meta step
# 3,600), beside the 1,200-step arm's final rules (label validation_end_every_family_final) ->
# results/flatness_round5_end_every_family_xl_WHICH.json; its meta-seeds without evaluation files are left out.
# Usage: bash results/flatness_round5_end/summarise_every_family.sh [final|selected] [hi|xl] [extra generalization_summary flags]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
WHICH=${1:-final}; shift || true
case $WHICH in final|selected) ;; *) echo "WHICH must be final or selected, got $WHICH" >&2; exit 2 ;; esac
LENGTH=hi; case ${1:-} in hi|xl) LENGTH=$1; shift ;; esac
LAST=1200; [ $LENGTH = xl ] && LAST=3600
ARM=general-pes_validation_end_every_family_$LENGTH
LABEL=validation_end_every_family_$WHICH; OUT=results/flatness_round5_end_every_family_$WHICH.json
[ $LENGTH = xl ] && LABEL=validation_end_every_family_xl_$WHICH OUT=results/flatness_round5_end_every_family_xl_$WHICH.json
L=""; BEST=""; EVALUATED=""
shopt -s nullglob
for s in 0 1 2 3 4 5; do
  L=$L,runs/round5/general-pes_vanilla_hi-s$s=vanilla,runs/round5/general-pes_validation_end_hi-s$s=validation_end
  L=$L,runs/round5/general-pes_validation_end_xl-s$s=validation_end_xl
  L=$L,runs/round5/general-pes_validation_end_log_family_hi-s$s=validation_end_log_family
  [ $LENGTH = xl ] && L=$L,runs/round5/general-pes_validation_end_every_family_hi-s$s=validation_end_every_family_final
  RUN=runs/round5/$ARM-s$s
  if [ $WHICH = selected ] && [ -f $RUN/best/training.json ] && ! grep -q "\"meta_step\": $LAST," $RUN/best/training.json; then RUN=$RUN/best; BEST="$BEST $s"; fi
  L=$L,$RUN=$LABEL
  files=(results/flatness_round5_end/${ARM}_*_s${s}_*.json); [ ${#files[@]} -gt 0 ] && EVALUATED="$EVALUATED $s"
done
[ $LENGTH = xl ] && echo "$ARM: meta-seeds with evaluation files:$EVALUATED" >&2
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  add_adam $t
  add_pes_hi vanilla $t
  IN=$IN,$(ls results/flatness_round5_end/general-pes_validation_end_{hi,xl,log_family_hi}_${t}_s*.json | paste -sd,)
  # Only labelled rules' files: an unlabelled learned spec would join the table as a tuned baseline. The final rules
  # of the runs whose selected rule is RUN/best are left out, and RUN/best's files are read for those runs alone.
  every=()
  [ $LENGTH = xl ] && every+=(results/flatness_round5_end/general-pes_validation_end_every_family_hi_${t}_s?_*.json)
  for s in 0 1 2 3 4 5; do
    case " $BEST " in *" $s "*) every+=(results/flatness_round5_end/${ARM}_best_${t}_s${s}_*.json) ;;
      *) every+=(results/flatness_round5_end/${ARM}_${t}_s${s}_*.json) ;; esac
  done
  IN=$IN,$(IFS=,; echo "${every[*]}")
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="${L#,}" --baseline=vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=$OUT "$@"
