#!/usr/bin/env bash
# The shipped adafac-mnist-generalize (docs/flatness.md, tenth stop) against Adam on MNIST trained on 1,000 examples, in
# distribution and on the three unseen optimizees (the conv net included, which the round-5 arms were not run on):
# both from the same machine, each at its step scale / rate chosen on a 5,000-example validation split held out of
# the training data (--tune_on=validation_accuracy in the summary), 10 evaluation seeds, 1,000 steps.
# RULE=hierarchical-mnist-generalize (shipped at the nineteenth stop, evaluated here at the twentieth) evaluates that
# shipped rule alone at the same step scales into results/generalize_shipped/hierarchical-mnist-generalize_TASK.json,
# read beside the first files by summarise.sh;
# RULE=adam_edge evaluates Adam at 1e-1 into results/generalize_shipped/adam_edge_TASK.json: on the conv net validation
# chose 3e-2, the first grid's top edge.
# Usage: bash results/generalize_shipped/evaluate.sh TASK [RULE] ; then bash results/generalize_shipped/summarise.sh
set -euo pipefail
TASK=$1; RULE=${2:-adafac-mnist-generalize}
SCALED="$RULE:lr=0.5,$RULE,$RULE:lr=2,$RULE:lr=4"
case $RULE in
  adafac-mnist-generalize) SPECS="$SCALED,adam:lr=3e-4,adam:lr=1e-3,adam:lr=3e-3,adam:lr=1e-2,adam:lr=3e-2"
                           OUT=results/generalize_shipped/$TASK.json ;;
  hierarchical-mnist-generalize) SPECS=$SCALED OUT=results/generalize_shipped/${RULE}_$TASK.json ;;
  adam_edge) SPECS=adam:lr=1e-1 OUT=results/generalize_shipped/adam_edge_$TASK.json ;;
  *) echo "unknown RULE $RULE (adafac-mnist-generalize, hierarchical-mnist-generalize or adam_edge)" >&2; exit 2 ;;
esac
exec python -m train.evaluate --optimizer=$SPECS \
  --task=$TASK --task_kwargs=train_examples=1000,validation_examples=5000 --steps=1000 --seeds=10 \
  --report_at=100,300,1000 --output=$OUT
