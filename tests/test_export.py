"""SavedModel export: same updates as Keras and the unroll, plain-TF serving, clear errors."""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules, tasks
from l2o_tf.export import ExportError, export_saved_model, load_saved_model
from l2o_tf.meta import unroll as unroll_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = {
    "dmlstm": lambda: rules.DMLSTM(seed=1, output_scale=0.1),
    "rnnprop": lambda: rules.RNNprop(seed=2, output_scale=0.1),
    "rnnprop_adam_scaled": lambda: rules.RNNprop(seed=2, output_scale=0.1, output_form="adam_scaled"),
    "rnnprop_long_memory": lambda: rules.RNNprop(seed=2, output_scale=0.1, output_form="adam_scaled", long_beta_2=0.999),
    "adam": lambda: rules.Adam(learning_rate=0.01),
    "sgd": lambda: rules.SGD(learning_rate=0.05, momentum=0.9),
}
N, STEPS = 7, 20


class GivenGradients(tasks.Task):
    """loss = sum(params * g_t): its gradient at step t is exactly the given g_t."""

    def __init__(self, grads):
        self.grads = tf.constant(grads, tf.float32)

    def init_params(self, seed):
        return [tf.linspace(-1.0, 1.0, N)]

    def train_batch(self, seed, step):
        return self.grads[step]

    def loss(self, params, batch):
        return tf.reduce_sum(params[0] * batch)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    made = {}
    for name, make in RULES.items():
        rule = make()
        made[name] = (rule, export_saved_model(rule, str(root / name)))
    return made


@pytest.mark.parametrize("name", sorted(RULES))
def test_export_keras_and_unroll_give_the_same_updates(name, exports):
    rule, path = exports[name]
    grads = np.random.default_rng(0).normal(size=(STEPS, N)).astype("float32")
    task = GivenGradients(grads)
    start = task.init_params(0)[0]

    loaded = tf.saved_model.load(path)
    params, state = start, loaded.signatures["init_state"](params=start)["state"]
    exported = []
    for t in range(STEPS):
        out = loaded.signatures["step"](grads=tf.constant(grads[t]), params=params, state=state, iteration=tf.constant(t, tf.int64))
        params, state = params + out["updates"], out["state"]
        exported.append(params.numpy())

    variable = tf.Variable(start)
    optimizer = l2o_tf.LearnedOptimizer(rule)
    keras_path = []
    for t in range(STEPS):
        optimizer.apply_gradients([(tf.constant(grads[t]), variable)])
        keras_path.append(variable.numpy())

    unrolled = [start]
    state = rule.initial_state(N)
    for t in range(STEPS):
        _, new_params, state = unroll_lib.optimizee_step(task, rule, [unrolled[-1]], state, task.train_batch(0, t), t)
        unrolled.append(new_params[0])
    np.testing.assert_allclose(np.stack(exported), np.stack(keras_path), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.stack(exported), np.stack([u.numpy() for u in unrolled[1:]]), atol=1e-6, rtol=0)
    assert np.abs(np.stack(exported)[-1] - start.numpy()).max() > 1e-3


def test_loaded_export_works_in_model_compile(exports):
    rule, path = exports["rnnprop"]
    x = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")
    y = x @ np.arange(5, dtype="float32")[:, None]
    weights = []
    for optimizer in (load_saved_model(path), l2o_tf.LearnedOptimizer(rule)):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append([w.numpy() for w in model.trainable_weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert load_saved_model(path).rule.state_size == 82


def _readme_snippet():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"<!-- plain-tf-snippet -->\n```python\n(.*?)```", text, re.S).group(1)


def test_plain_tensorflow_process_trains_to_the_same_weights(exports, tmp_path):
    """The README snippet, in a process that never imports l2o_tf, matches LearnedOptimizer in Keras."""
    rule, path = exports["rnnprop"]
    snippet = _readme_snippet().replace('"exports/rnnprop-mnist"', repr(path))
    script = (
        "import sys\n" + snippet
        + "\nassert 'l2o_tf' not in sys.modules, 'l2o_tf was imported'\n"
        + f"np.savez({str(tmp_path / 'w.npz')!r}, *[v.numpy() for v in model.trainable_variables])\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "w.npz")

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"), keras.layers.Dense(10)])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = l2o_tf.LearnedOptimizer(rule)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(640, 784)).astype("float32"), rng.integers(0, 10, 640)
    for i in range(5):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[128 * i : 128 * (i + 1)], model(x[128 * i : 128 * (i + 1)]))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    for i, variable in enumerate(model.trainable_variables):
        np.testing.assert_allclose(served[f"arr_{i}"], variable.numpy(), atol=1e-6)


def test_saved_model_cli_lists_both_signatures(exports):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed beside this Python")
    out = subprocess.run([cli, "show", "--dir", exports["dmlstm"][1], "--all"], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "signature_def['init_state']" in out.stdout and "signature_def['step']" in out.stdout
    assert "shape: (-1, 80)" in out.stdout


def test_metadata_records_rule_and_versions(exports):
    with open(os.path.join(exports["rnnprop"][1], "assets", "l2o_tf_export.json")) as f:
        meta = json.load(f)
    assert meta["format_version"] == 1 and meta["l2o_tf_version"] == l2o_tf.__version__
    assert meta["state_size"] == 82 and meta["rule"]["class_name"] == "RNNprop"


def test_bad_inputs(exports, tmp_path):
    step = tf.saved_model.load(exports["sgd"][1]).step  # the restored tf.function checks its input signature
    ok = dict(grads=tf.zeros([4]), params=tf.zeros([4]), state=tf.zeros([4, 1]), iteration=tf.constant(0, tf.int64))
    with pytest.raises(TypeError, match=r"shape=\(4, 1\).*name='grads'"):
        step(**dict(ok, grads=tf.zeros([4, 1])))  # wrong rank
    with pytest.raises(TypeError, match="float64, name='params'"):
        step(**dict(ok, params=tf.zeros([4], tf.float64)))  # wrong dtype
    with pytest.raises(TypeError, match=r"shape=\(4, 2\).*name='state'"):
        step(**dict(ok, state=tf.zeros([4, 2])))  # wrong state width
    with pytest.raises(tf.errors.InvalidArgumentError, match="grads and params must have the same length"):
        step(**dict(ok, grads=tf.zeros([3])))
    with pytest.raises(tf.errors.InvalidArgumentError, match="state must have one row per coordinate"):
        step(**dict(ok, state=tf.zeros([5, 1])))

    with pytest.raises(ExportError, match="not a directory"):
        load_saved_model(str(tmp_path / "missing"))
    with pytest.raises(ExportError, match="is not an l2o_tf export"):
        load_saved_model(str(tmp_path))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(exports["sgd"][1], corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match="corrupt SavedModel"):
        load_saved_model(str(corrupt))
    newer = tmp_path / "newer"
    shutil.copytree(exports["sgd"][1], newer)
    meta_path = newer / "assets" / "l2o_tf_export.json"
    meta_path.write_text(json.dumps(dict(json.loads(meta_path.read_text()), format_version=99)))
    with pytest.raises(ExportError, match="export format 99, newer"):
        load_saved_model(str(newer))


def test_export_binary(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "e"
    command = [sys.executable, "-m", "export.export_saved_model", "--optimizer=rnnprop-mnist", f"--output={out}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_saved_model(str(out)).rule.state_size == l2o_tf.pretrained.load_rule("rnnprop-mnist").state_size
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("name", l2o_tf.pretrained.names())
def test_every_shipped_optimizer_round_trips_exactly(name, tmp_path):
    """Config, .keras file and SavedModel: each copy makes the shipped optimizer's updates, bit for bit.

    The steps run in a tf.function, as in ``fit``: run eagerly, op by op, the in-memory rule
    rounds differently from the exported graph (by 1 ulp).
    """
    gen = np.random.default_rng(0)
    grads = [gen.normal(size=(3, 4)).astype("float32") for _ in range(3)]

    def updates(optimizer):
        variable = keras.Variable(np.linspace(-1.0, 1.0, 12).reshape(3, 4).astype("float32"))

        @tf.function
        def step(g):
            optimizer.apply_gradients([(g, variable)])

        for g in grads:
            step(tf.constant(g))
        return variable.numpy()

    reference = updates(l2o_tf.pretrained.load(name))
    np.testing.assert_array_equal(updates(keras.optimizers.deserialize(
        keras.optimizers.serialize(l2o_tf.pretrained.load(name)))), reference)
    # The export is a TF graph: bit for bit it matches the in-memory rule's TF path, and the default
    # (native kernel where the rule has one) within float rounding.
    tf_reference = updates(l2o_tf.pretrained.load(name, native_kernel=False))
    np.testing.assert_allclose(tf_reference, reference, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(updates(load_saved_model(export_saved_model(
        l2o_tf.pretrained.load_rule(name), str(tmp_path / "export"), layout=[(3, 4)]))), tf_reference)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=l2o_tf.pretrained.load(name), loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").optimizer
    for a, b in zip(l2o_tf.pretrained.load_rule(name).weights, loaded.rule.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(updates(type(loaded).from_config(loaded.get_config())), reference)
