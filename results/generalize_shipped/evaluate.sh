#!/usr/bin/env bash
# The shipped adafac-mnist-generalize (docs/flatness.md, tenth stop) against Adam on MNIST trained on 1,000 examples, in
# distribution and on the three unseen optimizees (the conv net included, which the round-5 arms were not run on):
# both from the same machine, each at its step scale / rate chosen on a 5,000-example validation split held out of
# the training data (--tune_on=validation_accuracy in the summary), 10 evaluation seeds, 1,000 steps.
# Usage: bash results/generalize_shipped/evaluate.sh TASK ; then bash results/generalize_shipped/summarise.sh
set -euo pipefail
TASK=$1
exec python -m train.evaluate \
  --optimizer=adafac-mnist-generalize:lr=0.5,adafac-mnist-generalize,adafac-mnist-generalize:lr=2,adafac-mnist-generalize:lr=4,adam:lr=3e-4,adam:lr=1e-3,adam:lr=3e-3,adam:lr=1e-2,adam:lr=3e-2 \
  --task=$TASK --task_kwargs=train_examples=1000,validation_examples=5000 --steps=1000 --seeds=10 \
  --report_at=100,300,1000 --output=results/generalize_shipped/$TASK.json
