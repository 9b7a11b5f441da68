#!/usr/bin/env bash
# Flatness round 5 (docs/flatness.md): every arm fine-tunes the shipped dmlstm-mnist for 400 meta steps on
# MNIST-MLP trajectories that train on 1,000 examples; arms differ only in the meta-objective / penalty.
# The *_long arms train over 1,000-step trajectories, the evaluation's length, instead of 200.
# START=general fine-tunes the 2100 rule (results/general_selection/at2100: `general` as shipped when this ran;
# AdafacMLP, which sees each weight and so can learn to shrink weights where DM-LSTM cannot) instead, with the same arms (out_dir runs/round5/general-ARM-sSEED).
# The *_hi arms (general start) fine-tune 3x longer at a 3.3x higher meta learning rate (1,200 meta steps at 1e-3, 1,000-step
# trajectories): 400 steps at 3e-4 barely moved the AdafacMLP.
# The pes_* arms repeat an arm with PES (8 particles, sigma 0.01) instead of truncated backprop: unbiased over the whole
# 1,000-step trajectory, so early steps are credited with the validation loss they cause later (Metz et al. 2019 used ES
# gradients for the same reason).
# START=scaled fine-tunes the 2100 rule from the step scale chosen on validation for it (0.25: at2100:lr=0.25, its
# nominal step step_mult 1e-3 -> 2.5e-4), so that fine-tuning is spent on more than shrinking the step (out_dir
# runs/round5/scaled-ARM-sSEED).
# The *_end_hi arms score only the second half of each 1,000-step trajectory (--meta_loss_trajectory_start=500): the
# evaluation reads the trajectory's end, and the whole-trajectory average rewarded fitting fast (the scaled start's finding).
# The *_xl arms continue their *_hi run (copied) to 3,600 meta steps.
# The *_family_hi arm is validation_end_hi over a family of MLPs (--task_family: sigmoid 784-20-10, tanh, ELU, sigmoid
# 784-40-10; trajectory i trains member i mod 4), so that meta-training cannot specialise to the sigmoid; ReLU and
# depth 2 stay unseen.
# The *_log_family_hi arm is that arm with --log_loss: each member's meta-loss on a log scale, so a member contributes its
# relative progress and one whose loss sits high (the ELU MLP, ~6x the others) no longer drives the meta-gradient;
# its *_xl twin continues it to 3,600 meta steps as the single-task *_xl arm does.
# The *_every_family_hi arm is the log-loss family arm with --every_member: each meta step's 8 PES particles are one
# antithetic pair per member, so every meta-gradient averages the four MLPs instead of one member pulling the rule for
# a whole trajectory; it validates every 100 meta steps on one held-out optimizee per member (RUN/best keeps the rule
# at the best validation). Its *_xl twin continues it to 3,600 meta steps.
# START=hierarchical fine-tunes the hierarchical rule (L2O-Scale's per-tensor GRU context feeding the AdafacMLP) grown
# from the same 2100 rule: its MLP weights copied, the context's first-layer rows at zero, so it starts as the 2100
# rule's exact update and the arms differ from the general start only in the context (out_dir runs/round5/hierarchical-ARM-sSEED).
# The pesN_* arms (pes16_*) are their pes_* twins with N PES particles instead of 8; pes16_*: half the meta-gradient's variance, to test
# whether the hierarchical rule's 2,058 meta-parameters drown the validation objective's signal in PES noise.
# The *_k800_end_hi arm scores the validation loss over the last 200 steps only (--meta_loss_trajectory_start=800).
# EXAMPLES=all (environment) is the full-data regime (examples.sh): out_dir runs/round5_full/.
# Usage: [EXAMPLES=all] bash results/flatness_round5/meta_train.sh ARM SEED [START]   (out_dir runs/round5/dmlstm-ARM-sSEED)
set -euo pipefail
ARM=$1; SEED=$2; START=${3:-dmlstm}
source results/flatness_round5/examples.sh
TRAJECTORY=200; META_STEPS=400; META_LR=3e-4
case $ARM in *_long) TRAJECTORY=1000 ;; *_hi) TRAJECTORY=1000; META_STEPS=1200; META_LR=1e-3 ;;
  *_xl) TRAJECTORY=1000; META_STEPS=3600; META_LR=1e-3 ;; esac
case $START in
  dmlstm)  RULE="--rule=dmlstm --rule_kwargs=output_scale=0.1 --init_from=dmlstm-mnist" ;;
  general) RULE="--rule=adafac_mlp --rule_kwargs=hidden_size=8 --init_from=results/general_selection/at2100" ;;
  hierarchical) RULE="--rule=hierarchical --rule_kwargs=hidden_size=8,context_hidden=8 --init_from=results/general_selection/at2100" ;;
  scaled)  RULE="--rule=adafac_mlp --rule_kwargs=hidden_size=8,step_mult=0.00025 --init_from=results/general_selection/at2100:lr=0.25" ;;
  *) echo "unknown start $START (dmlstm, general, hierarchical or scaled)" >&2; exit 2 ;;
esac
B="python -m train.meta_train --task=mnist_mlp --task_kwargs=$TRAIN_DATA $RULE
   --unroll=20 --trajectory=$TRAJECTORY --meta_steps=$META_STEPS
   --meta_lr=$META_LR --validate_every=1000 --checkpoint_every=100 --jit_compile --seed=$SEED"
PES=""
case $ARM in pes_*|pes[0-9]*_*) P=${ARM%%_*}; P=${P#pes}  # pes_ (8 particles) or pesN_
  PES="--estimator=pes --optimizees=${P:-8} --es_sigma=0.01"; ARM_RULE=${ARM#*_} ;; *) ARM_RULE=$ARM ;; esac
case $ARM_RULE in
  vanilla|vanilla_long|vanilla_hi|vanilla_xl) X="" ;;
  hessian)    X="--regularizer=hessian_trace --reg_weight=1e-4 --reg_num_probes=1" ;;
  entropy|entropy_long) X="--regularizer=local_entropy --reg_weight=0.01 --reg_gamma=1.0 --reg_sgld_steps=10 --reg_every=5" ;;
  adaptive)   X="--regularizer=adaptive_trace --reg_weight=1e-5 --reg_num_probes=1" ;;
  validation|validation_long|validation_hi|validation_xl) X="--meta_objective=validation --validation_examples=5000" ;;
  validation_end_hi|validation_end_xl) X="--meta_objective=validation --validation_examples=5000 --meta_loss_trajectory_start=500" ;;
  validation_end_family_hi) X="--meta_objective=validation --validation_examples=5000 --meta_loss_trajectory_start=500
    --task_family=mnist_mlp,mnist_mlp_tanh,mnist_mlp_elu,mnist_mlp_wide" ;;
  validation_end_log_family_hi|validation_end_log_family_xl) X="--meta_objective=validation --validation_examples=5000 --meta_loss_trajectory_start=500
    --task_family=mnist_mlp,mnist_mlp_tanh,mnist_mlp_elu,mnist_mlp_wide --log_loss" ;;
  validation_end_every_family_hi|validation_end_every_family_xl) X="--meta_objective=validation --validation_examples=5000
    --meta_loss_trajectory_start=500 --task_family=mnist_mlp,mnist_mlp_tanh,mnist_mlp_elu,mnist_mlp_wide --log_loss
    --every_member --validation_seeds=4 --validate_every=100" ;;
  validation_k800_end_hi) X="--meta_objective=validation --validation_examples=5000 --meta_loss_trajectory_start=800" ;;
  vanilla_end_hi) X="--meta_loss_trajectory_start=500" ;;
  mix_long) X="--meta_objective=mix --validation_weight=0.5 --validation_examples=5000" ;;
  validation+adaptive) X="--meta_objective=validation --validation_examples=5000 --regularizer=adaptive_trace --reg_weight=1e-5 --reg_num_probes=1" ;;
  validation+hessian)  X="--meta_objective=validation --validation_examples=5000 --regularizer=hessian_trace --reg_weight=1e-4 --reg_num_probes=1" ;;
  validation+entropy)  X="--meta_objective=validation --validation_examples=5000 --regularizer=local_entropy --reg_weight=0.01 --reg_gamma=1.0 --reg_sgld_steps=10 --reg_every=5" ;;
  *) echo "unknown arm $ARM" >&2; exit 2 ;;
esac
OUT=$RUNS/$START-$ARM-s$SEED
case $ARM in *_xl) [ -d $OUT ] || cp -r $RUNS/$START-${ARM%_xl}_hi-s$SEED $OUT ;; esac
exec $B $X $PES --out_dir=$OUT
