#!/usr/bin/env bash
# Round 5, the hierarchical rule (docs/flatness.md, fifteenth stop): L2O-Scale's per-tensor GRU context feeding the
# AdafacMLP, grown from the 2100 rule (meta_train.sh START=hierarchical: its MLP weights copied, the context rows at
# zero) and fine-tuned with the PES vanilla and end-scored validation arms (runs/round5/hierarchical-pes_{vanilla,
# validation_end}_hi-sSEED) and the validation arm with 16 PES particles instead of 8 (hierarchical-pes16_validation_end_hi,
# the PES-noise test, seventeenth stop) and its control, the vanilla arm with 16 particles (hierarchical-pes16_vanilla_hi,
# eighteenth stop: with it the validation objective's gain is measured at equal PES noise), beside the same arms on the AdafacMLP (general-pes_*), the start and Adam; every learned
# spec at its validation-chosen step scale, Adam at its validation-chosen rate; pairs against the hierarchical
# vanilla arm, or another arm with --baseline=LABEL (e.g. validation_end: the context's effect with the arm held).
# Meta-seeds without evaluation files are left out (stderr names those that have them); META_SEEDS (environment, default
# "0 1 2 3 4 5") restricts every arm to those meta-seeds (the fifteenth and seventeenth stops' outputs: "0 1 2 3").
# Usage: [META_SEEDS="0 1 2 3"] bash results/flatness_round5_end/summarise_hierarchical.sh [--baseline=LABEL --output=...]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
L=""; EVALUATED=""; HFILES=()
shopt -s nullglob
META_SEEDS=${META_SEEDS:-0 1 2 3 4 5}
for s in $META_SEEDS; do
  case $s in [0-5]) ;; *) echo "META_SEEDS: meta-seeds 0-5 only, got $s" >&2; exit 2 ;; esac
  files=(results/flatness_round5_scaled/hierarchical-pes{,16}_vanilla_hi_*_s${s}_*.json results/flatness_round5_end/hierarchical-pes{,16}_validation_end_hi_*_s${s}[._]*json)
  [ ${#files[@]} -gt 0 ] && EVALUATED="$EVALUATED $s"
  HFILES+=("${files[@]}")
  for arm in vanilla vanilla_16 validation_end validation_end_16; do
    L=$L,runs/round5/hierarchical-pes$(case $arm in *_16) echo 16 ;; esac)_${arm%_16}_hi-s$s=hierarchical_$arm
  done
done
echo "hierarchical arms: meta-seeds with evaluation files:$EVALUATED" >&2
# The AdafacMLP arms keep every meta-seed: their evaluation files hold several meta-seeds each.
for s in 0 1 2 3 4 5; do for arm in vanilla validation_end; do L=$L,runs/round5/general-pes_${arm}_hi-s$s=$arm; done; done
L=${L#,},results/general_selection/at2100=start
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  add_adam $t
  IN=$IN,results/flatness_round5_scaled/at2100_$t.json
  add_pes_hi vanilla $t
  IN=$IN,$(ls results/flatness_round5_end/general-pes_validation_end_hi_${t}_s*.json | paste -sd,)
  # this task's hierarchical files, arm by arm and in meta-seed order within an arm (pairing is by position)
  for prefix in scaled/hierarchical-pes_vanilla scaled/hierarchical-pes16_vanilla end/hierarchical-pes_validation_end end/hierarchical-pes16_validation_end; do
    for f in "${HFILES[@]}"; do case $f in results/flatness_round5_${prefix}_hi_${t}_s*) IN=$IN,$f ;; esac; done
  done
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="$L" --baseline=hierarchical_vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_end_hierarchical.json "$@"
