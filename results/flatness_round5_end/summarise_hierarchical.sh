#!/usr/bin/env bash
# Round 5, the hierarchical rule (docs/flatness.md, fifteenth stop): L2O-Scale's per-tensor GRU context feeding the
# AdafacMLP, grown from the 2100 rule (meta_train.sh START=hierarchical: its MLP weights copied, the context rows at
# zero) and fine-tuned with the PES vanilla and end-scored validation arms (runs/round5/hierarchical-pes_{vanilla,
# validation_end}_hi-sSEED) and the validation arm with 16 PES particles instead of 8 (hierarchical-pes16_validation_end_hi,
# the PES-noise test, seventeenth stop) and its control, the vanilla arm with 16 particles (hierarchical-pes16_vanilla_hi,
# eighteenth stop: with it the validation objective's gain is measured at equal PES noise), and that 16-particle
# validation arm continued to 3,600 meta steps (hierarchical-pes16_validation_end_xl, nineteenth stop) with its
# equal-budget control, the 16-particle vanilla arm likewise continued (hierarchical-pes16_vanilla_xl, twentieth
# stop); beside them the same arms on the AdafacMLP (general-pes_*, with its 3,600-step validation-end arm as
# validation_end_xl), the start and Adam. Every learned spec at its validation-chosen step scale, Adam at its
# validation-chosen rate; pairs against the hierarchical vanilla arm, or another arm with --baseline=LABEL (e.g.
# validation_end: the context's effect with the arm held).
# Meta-seeds without evaluation files are left out (stderr names those that have them); META_SEEDS (environment, default
# "0 1 2 3 4 5") restricts every arm to those meta-seeds (the fifteenth and seventeenth stops' outputs: "0 1 2 3").
# Usage: [META_SEEDS="0 1 2 3"] bash results/flatness_round5_end/summarise_hierarchical.sh [--baseline=LABEL --output=...]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
# The hierarchical arms, once: RUN (runs/round5/hierarchical-RUN-sSEED) LABEL
HIERARCHICAL="pes_vanilla_hi:hierarchical_vanilla pes16_vanilla_hi:hierarchical_vanilla_16
  pes_validation_end_hi:hierarchical_validation_end pes16_validation_end_hi:hierarchical_validation_end_16
  pes16_validation_end_xl:hierarchical_validation_end_16_xl pes16_vanilla_xl:hierarchical_vanilla_16_xl"
L=""; EVALUATED=""
shopt -s nullglob
META_SEEDS=${META_SEEDS:-0 1 2 3 4 5}
for s in $META_SEEDS; do
  case $s in [0-5]) ;; *) echo "META_SEEDS: meta-seeds 0-5 only, got $s" >&2; exit 2 ;; esac
  for arm in $HIERARCHICAL; do L=$L,runs/round5/hierarchical-${arm%%:*}-s$s=${arm#*:}; done
  [ -n "$(for arm in $HIERARCHICAL; do hfiles $arm '*' $s; done)" ] && EVALUATED="$EVALUATED $s"
done
echo "hierarchical arms: meta-seeds with evaluation files:$EVALUATED" >&2
# The AdafacMLP arms keep every meta-seed: their evaluation files hold several meta-seeds each.
for s in 0 1 2 3 4 5; do for arm in vanilla validation_end; do L=$L,runs/round5/general-pes_${arm}_hi-s$s=$arm; done
  L=$L,runs/round5/general-pes_validation_end_xl-s$s=validation_end_xl; done
L=${L#,},results/general_selection/at2100=start
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  add_adam $t
  IN=$IN,results/flatness_round5_scaled/at2100_$t.json
  add_pes_hi vanilla $t
  IN=$IN,$(ls results/flatness_round5_end/general-pes_validation_end_{hi,xl}_${t}_s*.json | paste -sd,)
  # arm by arm, in meta-seed order within an arm (pairing is by position)
  for arm in $HIERARCHICAL; do for s in $META_SEEDS; do for f in $(hfiles $arm $t $s); do IN=$IN,$f; done; done; done
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="$L" --baseline=hierarchical_vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_end_hierarchical.json "$@"
