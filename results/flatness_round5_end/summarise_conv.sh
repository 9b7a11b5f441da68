#!/usr/bin/env bash
# Round 5 on the conv net (docs/flatness.md, twentieth stop): the third unseen optimizee, which the round-5 arms were
# not run on. The hierarchical rule's 3,600-step validation-end arm (hierarchical-pes16_validation_end_xl) and its
# equal-budget vanilla control (hierarchical-pes16_vanilla_xl), meta-seeds 0-3 (and 4-5 where evaluated; pairs
# take the meta-seeds both sides have), each at its validation-chosen step
# scale, against Adam at its validation-chosen rate (results/generalize_shipped/: its grid 3e-4..3e-2, beside
# adafac-mnist-generalize, and 1e-1, the grid's top edge) and the shipped adafac-mnist-generalize; pairs against the
# vanilla control. Evaluation files: evaluate.sh mnist_conv GROUP SEED SCALES. ARMS (environment, RUN:LABEL pairs)
# restricts the arms (the twentieth stop: the validation arm alone, paired against the shipped rule with
# --baseline=generalize, the control's step-scale grid not yet closed).
# Usage: [ARMS=...] bash results/flatness_round5_end/summarise_conv.sh [--baseline=LABEL --output=...]
set -euo pipefail
source results/flatness_round5_end/inputs.sh
ARMS=${ARMS:-"pes16_validation_end_xl:hierarchical_validation_end_16_xl pes16_vanilla_xl:hierarchical_vanilla_16_xl"}
IN=results/generalize_shipped/mnist_conv.json,results/generalize_shipped/adam_edge_mnist_conv.json
L=adafac-mnist-generalize=generalize
shopt -s nullglob
for arm in $ARMS; do for s in 0 1 2 3 4 5; do  # arm by arm, in meta-seed order (pairing is by position)
  FILES=($(hfiles $arm mnist_conv $s))
  if [ ${#FILES[@]} -eq 0 ]; then  # meta-seeds 0-3 are required; 4-5 are read up to the first one missing
    [ $s -ge 4 ] && break
    echo "no conv-net evaluation of ${arm%%:*} meta-seed $s (evaluate.sh mnist_conv)" >&2; exit 2
  fi
  for f in "${FILES[@]}"; do IN=$IN,$f; done
  L=$L,runs/round5/hierarchical-${arm%%:*}-s$s=${arm#*:}
done; done
exec python -m train.generalization_summary --inputs="$IN" --labels="$L" --baseline=hierarchical_vanilla_16_xl \
  --tune_on=validation_accuracy --tune_step_scale --output=results/flatness_round5_end_hierarchical_conv.json "$@"
