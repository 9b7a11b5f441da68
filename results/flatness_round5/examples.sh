# Sourced by meta_train.sh and evaluate.sh: the regime EXAMPLES (environment) names, in one place.
# 1000 (the default): the small-data regime, optimizees on the first 1,000 training examples, runs under runs/round5/.
# all: the full-data regime, the whole training split less the 5,000-example validation split (held out for every
# arm, vanilla too, so that all train on the same 55,000), runs under runs/round5_full/.
# Sets RUNS, TRAIN_DATA (meta-training's task kwargs) and EVAL_DATA (evaluation's, with the validation split).
case ${EXAMPLES:=1000} in
  1000) TRAIN_DATA=train_examples=1000; EVAL_DATA=train_examples=1000,validation_examples=5000; RUNS=runs/round5 ;;
  all)  TRAIN_DATA=validation_examples=5000; EVAL_DATA=validation_examples=5000; RUNS=runs/round5_full ;;
  *) echo "EXAMPLES must be 1000 (the small-data regime, the default) or all, got $EXAMPLES" >&2; exit 2 ;;
esac
