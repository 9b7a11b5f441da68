#!/usr/bin/env bash
# Summary of results/generalize_shipped/TASK.json (evaluate.sh): results/generalize_shipped.json, .png.
set -euo pipefail
exec python -m train.generalization_summary --inputs='results/generalize_shipped/mnist*.json' \
  --labels=adafac-mnist-generalize=generalize --tune_on=validation_accuracy --tune_step_scale \
  --output=results/generalize_shipped.json "$@"
