#!/usr/bin/env bash
# Round 5 in the full-data regime (docs/flatness.md, sixteenth stop): the PES vanilla, end-scored training-loss
# (vanilla_end) and end-scored validation arms fine-tuned from the 2100 rule with every optimizee training on the
# whole training split less the 5,000-example validation split (EXAMPLES=all meta_train.sh / evaluate.sh), each
# meta-seed at its validation-chosen step scale, beside the start they were fine-tuned from (the 2100 rule at 0.25-1,
# and 2 where validation chose 1: at2100_TASK_lr2) and Adam at its validation-chosen rate (3e-4..3e-2 at factors of at
# most 2: evaluate.sh adam_hi, adam_edge and adam_fine), and the shipped adafac-mnist-generalize and general at 0.5-2
# (shipped_TASK.json; 4 and 8 in shipped_TASK_lr4.json, _lr8.json where one chose the grid's top); pairs against
# vanilla, or another label with --baseline=LABEL.
# Usage: bash results/flatness_round5_full/summarise.sh [--baseline=LABEL --output=...]
set -euo pipefail
shopt -s nullglob
D=results/flatness_round5_full
L=""
for s in 0 1 2 3 4 5; do
  for arm in vanilla vanilla_end validation_end; do L=$L,runs/round5_full/general-pes_${arm}_hi-s$s=$arm; done
done
IN=""
for t in mnist_mlp mnist_mlp_relu mnist_mlp_deep; do
  files=($D/adam_hi_$t.json $D/adam_edge_$t.json $D/adam_fine_$t.json $D/at2100_$t.json $D/at2100_${t}_lr*.json
         $D/shipped_$t.json $D/shipped_${t}_lr*.json $D/general-pes_*_hi_${t}_s*.json)
  IN=$IN,$(IFS=,; echo "${files[*]}")
done
L=$L,results/general_selection/at2100=start,adafac-mnist-generalize=shipped_generalize,general=general
exec python -m train.generalization_summary --inputs="${IN#,}" --labels="${L#,}" --baseline=vanilla \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_full.json "$@"
