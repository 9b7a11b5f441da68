#!/usr/bin/env bash
# Round 5, the meta-loss scored where trajectories end (docs/flatness.md): the PES validation arm fine-tuned from the
# 2100 rule with --meta_loss_trajectory_start=500 (runs/round5/general-pes_validation_end_hi-sSEED), its vanilla
# twin scored the same way (general-pes_vanilla_end_hi, the control: is it the end or the validation split?), the
# validation arm scored over the last 200 steps only (general-pes_validation_k800_end_hi, K=800), beside the PES arms
# that score the whole trajectory (general-pes_{vanilla,validation}_hi), the start and Adam; every learned spec at
# its validation-chosen step scale, Adam at its validation-chosen rate; pairs against the whole-trajectory vanilla arm.
# Usage: bash results/flatness_round5_end/summarise.sh [--stop_on=validation_accuracy --output=...]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
L=""
for s in 0 1 2 3 4 5; do
  for arm in vanilla validation validation_end; do L=$L,runs/round5/general-pes_${arm}_hi-s$s=$arm; done
done
for s in 0 1 2; do L=$L,runs/round5/general-pes_vanilla_end_hi-s$s=vanilla_end; done  # the control: 3 meta-seeds
for s in 0 1 2 3; do L=$L,runs/round5/general-pes_validation_k800_end_hi-s$s=validation_k800_end; done  # K=800 (17th stop)
L=${L#,},results/general_selection/at2100=start
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  add_adam $t
  IN=$IN,results/flatness_round5_scaled/at2100_$t.json
  for arm in vanilla validation; do
    add_pes_hi $arm $t
  done
  IN=$IN,$(ls results/flatness_round5_end/general-pes_{vanilla,validation,validation_k800}_end_hi_${t}_s*.json | paste -sd,)
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="$L" --baseline=vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_end.json "$@"
