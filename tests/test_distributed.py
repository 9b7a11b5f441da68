"""Distributed meta-training: tf.distribute replicas share the batch of optimizees, results equal one device."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf.meta import strategies
from l2o_tf.meta.trainer import MetaTrainConfig, MetaTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
    config = dict(task="quadratic", task_kwargs={"batch_size": 8, "dim": 4}, rule="rnnprop",
                  rule_kwargs={"hidden_size": 8, "output_scale": 0.1}, unroll=5, curriculum=(10,),
                  meta_steps=3, meta_lr=1e-2, validate_every=100, checkpoint_every=100, optimizees=4)
    config.update(overrides)
    return MetaTrainConfig.from_flat(**config)


def _max_difference(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))


def test_mirrored_over_two_cpus_equals_one_device(tmp_path):
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    one = MetaTrainer(_config(), str(tmp_path / "one"))
    two = MetaTrainer(_config(), str(tmp_path / "two"), strategy=mirrored)
    one.train(verbose=0)
    two.train(verbose=0)
    assert _max_difference(one.rule.get_weights(), two.rule.get_weights()) <= 1e-6
    loss_one, grads_one = one.meta_gradient()
    loss_two, grads_two = two.meta_gradient()
    np.testing.assert_allclose(float(loss_two), float(loss_one), rtol=1e-6)
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in grads_one)
    assert scale > 0
    assert _max_difference(grads_one, grads_two) <= 1e-5 * scale
    # The batch is really four optimizees: the mean differs from the first optimizee's meta-gradient.
    single = MetaTrainer(_config(optimizees=1), str(tmp_path / "single"))
    single.rule.set_weights(one.rule.get_weights())
    assert _max_difference(single.meta_gradient()[1], grads_one) > 1e-3 * scale


def test_optimizees_must_be_a_multiple_of_the_replicas(tmp_path):
    with pytest.raises(ValueError, match=r"optimizees \(3\) must be a multiple of the strategy's 2 replicas"):
        MetaTrainer(_config(optimizees=3), str(tmp_path), strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))


def test_strategy_names_and_worker_dirs(monkeypatch):
    with pytest.raises(ValueError, match="unknown strategy 'gpus'"):
        strategies.make("gpus")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the cluster in the TF_CONFIG"):
        strategies.make("multi_worker")
    assert strategies.worker_out_dir("/r") == "/r"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    assert strategies.worker_out_dir("/r") == os.path.join("/r", "worker-1")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(out_dir, *extra):
    return [sys.executable, "-m", "train.meta_train", "--task=quadratic", "--task_kwargs=batch_size=8,dim=4",
            "--rule=rnnprop", "--rule_kwargs=hidden_size=8,output_scale=0.1", "--unroll=5", "--trajectory=10",
            "--meta_steps=6", "--meta_lr=1e-2", "--checkpoint_every=3", "--validate_every=4", "--optimizees=2",
            f"--out_dir={out_dir}", *extra]


def test_multi_worker_on_localhost_matches_one_process(tmp_path):
    """Two worker processes (TF_CONFIG) end with identical weights, equal to one process with the same batch."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    single = subprocess.run(_command(tmp_path / "single"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]

    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            _command(tmp_path / "multi", "--strategy=multi_worker"), cwd=ROOT,
            env=dict(env, TF_CONFIG=json.dumps(tf_config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]

    chief = l2o_tf.pretrained.load_rule(str(tmp_path / "multi")).get_weights()
    worker = l2o_tf.pretrained.load_rule(str(tmp_path / "multi" / "worker-1")).get_weights()
    reference = l2o_tf.pretrained.load_rule(str(tmp_path / "single")).get_weights()
    assert _max_difference(chief, worker) == 0.0
    assert _max_difference(chief, reference) <= 1e-6
    assert (tmp_path / "multi" / "worker-1" / "checkpoints" / "checkpoint").exists()
