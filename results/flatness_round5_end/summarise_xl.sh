#!/usr/bin/env bash
# Round 5, the end-scored validation arm meta-trained 3x longer (docs/flatness.md): general-pes_validation_end_xl
# continues each general-pes_validation_end_hi run (1,200 meta steps) to 3,600. Beside it the _hi runs it continues,
# the whole-trajectory PES vanilla arm and Adam; every learned spec at its validation-chosen step scale, Adam at its
# validation-chosen rate. Pairs against vanilla (results/flatness_round5_end_xl.json) or, with
# --baseline=validation_end --output=results/flatness_round5_end_xl_vs_hi.json, against the runs it continues.
# Since the eleventh stop also the family arm (general-pes_validation_end_family_hi: validation_end_hi meta-trained on
# four MLPs, meta-seeds 0-5, one file per meta-seed); against the 3,600-step arm (each arm minus it):
# --baseline=validation_end_xl --output=results/flatness_round5_end_family_vs_xl.json.
# Since the twelfth stop also the log-loss family arm (general-pes_validation_end_log_family_hi: the family arm with
# --log_loss) and the same runs' validation-best rules (RUN/best, meta step 1,000: validation_end_log_family_best);
# against the family arm: --baseline=validation_end_family --output=results/flatness_round5_end_log_family_vs_family.json.
# Usage: bash results/flatness_round5_end/summarise_xl.sh [extra train.generalization_summary flags]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
L=""
for s in 0 1 2 3 4 5; do
  L=$L,runs/round5/general-pes_vanilla_hi-s$s=vanilla,runs/round5/general-pes_validation_end_hi-s$s=validation_end
  L=$L,runs/round5/general-pes_validation_end_xl-s$s=validation_end_xl
  L=$L,runs/round5/general-pes_validation_end_family_hi-s$s=validation_end_family
  L=$L,runs/round5/general-pes_validation_end_log_family_hi-s$s=validation_end_log_family
  L=$L,runs/round5/general-pes_validation_end_log_family_hi-s$s/best=validation_end_log_family_best
done
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  add_adam $t
  add_pes_hi vanilla $t
  IN=$IN,$(ls results/flatness_round5_end/general-pes_validation_end_{hi,xl,family_hi,log_family_hi,log_family_hi_best}_${t}_s*.json | paste -sd,)
done
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="${L#,}" --baseline=vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_end_xl.json "$@"
