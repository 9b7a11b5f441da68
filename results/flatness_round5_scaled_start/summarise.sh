#!/usr/bin/env bash
# Round 5, fine-tuning from the validation-chosen step (docs/flatness.md): the PES arms fine-tuned from at2100:lr=0.25
# (runs/round5/scaled-ARM-sSEED) beside the same arms fine-tuned from the 2100 rule's own step
# (runs/round5/general-ARM-sSEED), the start itself and Adam, every learned spec at its validation-chosen step scale.
# Usage: bash results/flatness_round5_scaled_start/summarise.sh [--stop_on=validation_accuracy --output=...]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
L=""
for arm in vanilla validation; do
  for s in 0 1 2 3 4 5; do
    L=$L,runs/round5/scaled-pes_${arm}_hi-s$s=from_0.25_$arm,runs/round5/general-pes_${arm}_hi-s$s=from_1_$arm
  done
done
L=${L#,},results/general_selection/at2100=start
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  add_adam $t
  IN=$IN,results/flatness_round5_scaled/at2100_$t.json,results/flatness_round5_hi*/general-pes_*_hi_$t.json
  IN=$IN,results/flatness_round5_scaled/general-pes_*_hi_${t}_s*.json,results/flatness_round5_scaled_start/scaled-pes_*_hi_${t}_s*.json
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="$L" --baseline=from_0.25_vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_scaled_start.json "$@"
