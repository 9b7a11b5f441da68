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
# Usage: bash results/flatness_round5_end/summarise_every_family.sh [final|selected] [extra generalization_summary flags]
set -euo pipefail
WHICH=${1:-final}; shift || true
case $WHICH in final|selected) ;; *) echo "WHICH must be final or selected, got $WHICH" >&2; exit 2 ;; esac
L=""; BEST=""
for s in 0 1 2 3 4 5; do
  L=$L,runs/round5/general-pes_vanilla_hi-s$s=vanilla,runs/round5/general-pes_validation_end_hi-s$s=validation_end
  L=$L,runs/round5/general-pes_validation_end_xl-s$s=validation_end_xl
  L=$L,runs/round5/general-pes_validation_end_log_family_hi-s$s=validation_end_log_family
  RUN=runs/round5/general-pes_validation_end_every_family_hi-s$s
  if [ $WHICH = selected ] && ! grep -q '"meta_step": 1200,' $RUN/best/training.json; then RUN=$RUN/best; BEST="$BEST $s"; fi
  L=$L,$RUN=validation_end_every_family_$WHICH
done
IN=""
shopt -s nullglob
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  IN=$IN,results/flatness_round5_hi/adam_hi_$t.json,results/flatness_round5_scaled/adam_edge_$t.json
  IN=$IN,results/flatness_round5_hi/general-pes_vanilla_hi_$t.json,results/flatness_round5_hi_more/general-pes_vanilla_hi_$t.json
  IN=$IN,$(ls results/flatness_round5_scaled/general-pes_vanilla_hi_${t}_s*.json | paste -sd,)
  IN=$IN,$(ls results/flatness_round5_end/general-pes_validation_end_{hi,xl,log_family_hi}_${t}_s*.json | paste -sd,)
  # Only labelled rules' files: an unlabelled learned spec would join the table as a tuned baseline. The final rules
  # of the runs whose selected rule is RUN/best are left out, and RUN/best's files are read for those runs alone.
  every=()
  for s in 0 1 2 3 4 5; do
    case " $BEST " in *" $s "*) every+=(results/flatness_round5_end/general-pes_validation_end_every_family_hi_best_${t}_s${s}_*.json) ;;
      *) every+=(results/flatness_round5_end/general-pes_validation_end_every_family_hi_${t}_s${s}_*.json) ;; esac
  done
  IN=$IN,$(IFS=,; echo "${every[*]}")
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="${L#,}" --baseline=vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_end_every_family_$WHICH.json "$@"
