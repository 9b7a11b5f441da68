r"""Meta-train a learned optimizer.

    python -m train.meta_train --task=mnist_mlp --rule=rnnprop --unroll=20 --trajectory=100 \
        --meta_steps=2000 --meta_lr=1e-3 --seed=0 --out_dir=runs/rnnprop --checkpoint_every=100

Re-running the same command with the same --out_dir resumes from its latest checkpoint.

Distributed: --strategy=mirrored (local GPUs), multi_worker (cluster in TF_CONFIG; every
worker runs the same command, the chief writes to --out_dir and worker i to
--out_dir/worker-i), or tpu (--tpu=ADDRESS).  --optimizees is the global batch of
optimizees per meta step, shared by the replicas.
The trained optimizer is usable as ``l2o_tf.pretrained.load(out_dir)`` or
``--optimizer=OUT_DIR`` in ``train.evaluate``.
"""

import os

import tensorflow as tf
from absl import app, flags

from l2o_tf.meta import strategies
from l2o_tf.meta.trainer import MetaTrainConfig, MetaTrainer
from train.flags_util import parse_kwargs, run_cleanly

FLAGS = flags.FLAGS
flags.DEFINE_string("task", "mnist_mlp", "Optimizee task name (l2o_tf.tasks.names()).")
flags.DEFINE_list("task_kwargs", [], "Task arguments as key=value, e.g. sigma=0.5,dim=10.")
flags.DEFINE_string("rule", "rnnprop", "Rule to meta-train: rnnprop or dmlstm.")
flags.DEFINE_list("rule_kwargs", [], "Rule arguments as key=value, e.g. output_scale=0.1.")
flags.DEFINE_integer("unroll", 20, "Optimizee steps per truncated unroll (one meta-gradient).")
flags.DEFINE_integer("trajectory", 100, "Optimizee steps before a fresh optimizee (if no --curriculum).")
flags.DEFINE_list("curriculum", [], "Trajectory lengths, advanced when validation stops improving, e.g. 100,200,500,1000.")
flags.DEFINE_integer("patience", 3, "Validations without improvement before the curriculum advances.")
flags.DEFINE_integer("validate_every", 200, "Meta steps between validations.")
flags.DEFINE_integer("validation_seeds", 2, "Held-out optimizees per validation.")
flags.DEFINE_integer("meta_steps", 1000, "Total meta steps (truncations).")
flags.DEFINE_float("meta_lr", 1e-3, "Adam learning rate of the meta-optimizer.")
flags.DEFINE_float("clipnorm", 1.0, "Global-norm clip of the meta-gradient.")
flags.DEFINE_boolean("second_order", False, "Keep second derivatives through the optimizee gradient.")
flags.DEFINE_enum("loss_weights", "uniform", ["uniform", "increasing"], "Weights of the losses in the meta-loss.")
flags.DEFINE_boolean("log_loss", False, "Meta-loss on log f_t: every decade of progress counts (LASSO, quadratics; needs f > 0).")
flags.DEFINE_integer("seed", 0, "Run seed: rule initialisation and optimizee seeds.")
flags.DEFINE_string("out_dir", None, "Directory for checkpoints, config.json, TensorBoard logs and the optimizer.")
flags.DEFINE_integer("checkpoint_every", 100, "Meta steps between checkpoints.")
flags.DEFINE_float("imitation_weight", 0.0, "Weight of imitating an Adam teacher's updates (0: off).")
flags.DEFINE_float("imitation_lr", 1e-2, "Learning rate of the Adam teacher.")
flags.DEFINE_enum("regularizer", "none", ["none", "hessian_trace", "hessian_eig", "local_entropy"],
                  "Flatness penalty added to the meta-loss (alpha * sum_t R_t).")
flags.DEFINE_float("reg_weight", 1e-4, "alpha: weight of the flatness penalty.")
flags.DEFINE_integer("reg_every", 1, "Apply the penalty every k-th step of each unroll.")
flags.DEFINE_integer("reg_start", 0, "Meta step from which the penalty is on.")
flags.DEFINE_integer("reg_trajectory_start", 0, "Optimizee step of each trajectory from which the penalty is on "
                     "(a multiple of --unroll): penalise where trajectories end, not their first steps.")
flags.DEFINE_integer("reg_num_probes", 1, "hessian_trace: Rademacher probes.")
flags.DEFINE_integer("reg_num_iters", 10, "hessian_eig: power iterations.")
flags.DEFINE_float("reg_gamma", 1.0, "local_entropy: coupling gamma.")
flags.DEFINE_integer("reg_sgld_steps", 10, "local_entropy: SGLD steps per estimate.")
flags.DEFINE_list("task_family", [], "Train over a family: the task with sigma in this list (e.g. 0.1,0.5,1).")
flags.DEFINE_integer("maml_inner_steps", 0, "M-L2O: inner steps on the rule weights per meta step (0: vanilla).")
flags.DEFINE_float("maml_inner_lr", 1e-3, "M-L2O: inner learning rate (of --maml_inner_optimizer).")
flags.DEFINE_boolean("maml_second_order", False, "M-L2O: differentiate through the inner step.")
flags.DEFINE_enum("maml_inner_optimizer", "sgd", ["sgd", "adam"],
                  "M-L2O: inner optimizer; adam matches the test-time adaptation (train.adapt).")
flags.DEFINE_integer("optimizees", 1, "Optimizees unrolled per meta step (the global batch, split over replicas).")
flags.DEFINE_enum("strategy", "default", list(strategies.NAMES), "tf.distribute strategy for the meta step.")
flags.DEFINE_list("devices", [], "mirrored: the devices to mirror over, e.g. /gpu:0,/gpu:1 (default: all GPUs).")
flags.DEFINE_string("tpu", "", "tpu: the TPU address ('local' on a TPU VM).")
flags.DEFINE_boolean("recompute", False, "Recompute the rule's activations in the backward pass: less memory for long unrolls.")
flags.DEFINE_boolean("jit_compile", False, "Compile the unrolls with XLA (its random batches differ from the non-XLA run's).")
flags.DEFINE_boolean("native_kernel", False, "Run the rule's LSTM stack (forward and backward) with l2o_tf's native "
                     "fused CPU kernels (needs a C++ compiler; excludes --jit_compile).")
flags.DEFINE_boolean("deterministic", True, "Enable TF op determinism (exact resume).")
flags.mark_flag_as_required("out_dir")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    strategy = strategies.make(FLAGS.strategy, FLAGS.devices, FLAGS.tpu)  # before any other TF op
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    config = MetaTrainConfig(
        task=FLAGS.task,
        task_kwargs=parse_kwargs(FLAGS.task_kwargs, "task_kwargs"),
        rule=FLAGS.rule,
        rule_kwargs=parse_kwargs(FLAGS.rule_kwargs, "rule_kwargs"),
        unroll=FLAGS.unroll,
        curriculum=tuple(int(t) for t in FLAGS.curriculum) or (FLAGS.trajectory,),
        patience=FLAGS.patience,
        validate_every=FLAGS.validate_every,
        validation_seeds=FLAGS.validation_seeds,
        meta_steps=FLAGS.meta_steps,
        meta_lr=FLAGS.meta_lr,
        clipnorm=FLAGS.clipnorm,
        second_order=FLAGS.second_order,
        loss_weights=FLAGS.loss_weights,
        log_loss=FLAGS.log_loss,
        seed=FLAGS.seed,
        checkpoint_every=FLAGS.checkpoint_every,
        imitation_weight=FLAGS.imitation_weight,
        imitation_lr=FLAGS.imitation_lr,
        regularizer=FLAGS.regularizer,
        reg_weight=FLAGS.reg_weight,
        reg_every=FLAGS.reg_every,
        reg_start=FLAGS.reg_start,
        reg_trajectory_start=FLAGS.reg_trajectory_start,
        reg_num_probes=FLAGS.reg_num_probes,
        reg_num_iters=FLAGS.reg_num_iters,
        reg_gamma=FLAGS.reg_gamma,
        reg_sgld_steps=FLAGS.reg_sgld_steps,
        task_family=tuple(float(x) for x in FLAGS.task_family),
        maml_inner_steps=FLAGS.maml_inner_steps,
        maml_inner_lr=FLAGS.maml_inner_lr,
        maml_second_order=FLAGS.maml_second_order,
        maml_inner_optimizer=FLAGS.maml_inner_optimizer,
        optimizees=FLAGS.optimizees,
        jit_compile=FLAGS.jit_compile,
        recompute=FLAGS.recompute,
        native_kernel=FLAGS.native_kernel,
    )
    out_dir = strategies.worker_out_dir(os.path.abspath(FLAGS.out_dir))
    trainer = MetaTrainer(config, out_dir, strategy=strategy)
    trainer.train(verbose=1 if strategies.worker_index() == 0 else 0)
    print(f"optimizer written to {os.path.join(out_dir, 'optimizer')}")


if __name__ == "__main__":
    app.run(run_cleanly(main))
