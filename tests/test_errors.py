"""Bad input gets one clear error naming the problem (README, "Bad input"): the cases not covered
beside their features elsewhere (see the table for where each row is tested)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules
from l2o_tf.meta import MetaTrainConfig, MetaTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _meta_train(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "train.meta_train", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--task=imagenet"], "Unknown task 'imagenet'"),
        (["--rule=lstm9"], "Unknown rule 'lstm9'"),
        (["--unroll=50", "--trajectory=20"], "must be >= the unroll (50)"),
        (["--meta_steps=0"], "meta_steps must be >= 1"),
        (["--task=quadratic", "--task_kwargs=sigma=-1"], "sigma must be > 0"),
        (["--rule_kwargs=hidden_size"], "'hidden_size' is not key=value"),
        (["--rule_kwargs=hidden_size=4", "--rule_kwargs=hidden_size=8"], "hidden_size is given twice (4 and 8)"),
        (["--optimizees=0"], "optimizees must be >= 1"),
        (["--strategy=multi_worker"], "strategy 'multi_worker' needs the cluster in the TF_CONFIG"),
        (["--devices=/cpu:0"], "only applies to the mirrored strategy"),
    ],
)
def test_meta_train_bad_flags_exit_with_one_line_and_write_nothing(flags, message, tmp_path):
    out = tmp_path / "run"
    result = _meta_train(f"--out_dir={out}", *flags)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_repeated_kwargs_flags_merge_instead_of_keeping_the_last():
    """``--rule_kwargs=a=1 --rule_kwargs=b=2`` is ``--rule_kwargs=a=1,b=2``: a plain list flag kept only
    the last occurrence, and a run meant to start from Adam silently trained another rule."""
    from absl import flags  # noqa: PLC0415

    from train import cli  # noqa: PLC0415

    values = flags.FlagValues()
    cli.define_kwargs_flag("rule_kwargs", "Rule arguments.", {"output_scale": 0.1}, flag_values=values)
    values(["prog", "--rule_kwargs=adam_prior=1", "--rule_kwargs=zero_init_output=true,exp_mult=0.3",
            "--rule_kwargs=hidden_size=8"])
    assert cli.parse_kwargs(values.rule_kwargs, "rule_kwargs") == {
        "adam_prior": 1, "zero_init_output": True, "exp_mult": 0.3, "hidden_size": 8}
    values = flags.FlagValues()
    cli.define_kwargs_flag("rule_kwargs", "Rule arguments.", {"output_scale": 0.1}, flag_values=values)
    values(["prog"])
    assert cli.parse_kwargs(values.rule_kwargs, "rule_kwargs") == {"output_scale": 0.1}


def test_meta_train_unknown_regularizer_flag():
    result = _meta_train("--out_dir=/tmp/never", "--regularizer=flat")
    assert result.returncode != 0 and "regularizer" in result.stderr and "Traceback" not in result.stderr


def _tiny_config(**overrides):
    config = dict(task="quadratic", task_kwargs={"batch_size": 2, "dim": 3}, rule="rnnprop",
                  rule_kwargs={"hidden_size": 4}, unroll=2, curriculum=(4,), meta_steps=2,
                  validate_every=100, checkpoint_every=1)
    config.update(overrides)
    return MetaTrainConfig.from_flat(**config)


def test_corrupt_checkpoint_is_reported(tmp_path):
    MetaTrainer(_tiny_config(), str(tmp_path)).train(verbose=0)
    data = [f for f in os.listdir(tmp_path / "checkpoints") if f.startswith("ckpt-2.data")][0]
    path = tmp_path / "checkpoints" / data
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="ckpt-2 is corrupt or does not match this run"):
        MetaTrainer(_tiny_config(meta_steps=3), str(tmp_path)).train(verbose=0)


def test_checkpoint_of_another_rule_is_refused(tmp_path):
    MetaTrainer(_tiny_config(), str(tmp_path)).train(verbose=0)
    os.remove(tmp_path / "config.json")  # even without the config check, the checkpoint does not fit
    with pytest.raises(ValueError, match="corrupt or does not match this run"):
        MetaTrainer(_tiny_config(rule_kwargs={"hidden_size": 5}), str(tmp_path)).train(verbose=0)


def test_integer_variables_are_refused():
    optimizer = l2o_tf.LearnedOptimizer(rules.RNNprop())
    with pytest.raises(TypeError, match="dtype int32"):
        optimizer.apply_gradients([(tf.constant([1, 2]), tf.Variable([1, 2]))])


def test_adapt_on_fit_needs_a_learned_optimizer():
    import keras  # noqa: PLC0415

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(TypeError, match="AdaptOnFit needs a model compiled with an l2o_tf.LearnedOptimizer"):
        model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0, callbacks=[l2o_tf.AdaptOnFit(np.ones((4, 2)), np.ones((4, 1)))])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"regularizer": "hessian_trace", "reg_weight": -1.0}, "regularizer weight must be >= 0"),
        ({"imitation_weight": -0.5}, "imitation_weight must be >= 0"),
        ({"regularizer": "hessian_trace", "reg_every": 0}, "reg_every must be >= 1"),
        ({"maml_inner_steps": 1, "regularizer": "hessian_trace"}, "does not combine"),
    ],
)
def test_negative_weights_and_bad_combinations(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny_config(**overrides)
