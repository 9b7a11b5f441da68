#!/usr/bin/env bash
# Summary of results/generalize_shipped/TASK.json (evaluate.sh) and, where evaluated, the hierarchical rule's
# hierarchical-mnist-generalize_TASK.json and Adam's adam_edge_TASK.json: results/generalize_shipped.json, .png.
set -euo pipefail
exec python -m train.generalization_summary \
  --inputs='results/generalize_shipped/mnist*.json,results/generalize_shipped/hierarchical-mnist-generalize_*.json,results/generalize_shipped/adam_edge_*.json' \
  --labels=adafac-mnist-generalize=generalize,hierarchical-mnist-generalize=hierarchical_generalize \
  --tune_on=validation_accuracy --tune_step_scale --output=results/generalize_shipped.json "$@"
