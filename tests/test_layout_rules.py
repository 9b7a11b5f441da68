"""Rules that see tensor structure: the Layout, and AdafacMLP and Hierarchical through fit (per-variable
and fused), the unroll and the export, with finite-difference-checked meta-gradients and exact config
round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2o_tf
from l2o_tf import rules, tasks
from l2o_tf.export import load_saved_model, export_saved_model
from l2o_tf.meta import MetaTrainConfig, MetaTrainer, UnrollConfig
from l2o_tf.meta import unroll as unroll_lib
from l2o_tf.rules.base import apply_rule
from l2o_tf.rules.layout import Layout
from numerics import directional_fd_check, random_rule_state, stateless_unroll

SHAPES = ((3, 4), (5,), (2, 3, 4), ())
RULES = {"adafac_mlp": rules.AdafacMLP, "hierarchical": rules.Hierarchical}


def _hypergradient_adafac_mlp(**kwargs):
    """AdafacMLP with a per-tensor hypergradient step scale, at a rate that moves the scale within a few steps."""
    return rules.HypergradientScale(rules.AdafacMLP(**kwargs), rate=0.5, min_scale=0.05, max_scale=5.0)


# Every layout-aware step: the two rules, and a rule wrapped with a per-tensor step scale.
STEPS = {**RULES, "hypergradient_adafac_mlp": _hypergradient_adafac_mlp}


@pytest.fixture(params=sorted(STEPS))
def rule_cls(request):
    return STEPS[request.param]


@pytest.fixture(params=sorted(RULES))
def base_rule_cls(request):
    return RULES[request.param]


def _values(shapes, seed):
    gen = np.random.default_rng(seed)
    return [gen.normal(size=s).astype("float32") for s in shapes]


def test_layout_means_match_numpy():
    layout = Layout(SHAPES)
    assert layout.shapes[-1] == (1,) and layout.num_coordinates == 12 + 5 + 24 + 1
    parts = _values(layout.shapes, 0)
    x = np.concatenate([p.reshape(-1) for p in parts])[:, None] * np.array([[1.0, -2.0]], "float32")
    means = layout.tensor_mean(tf.constant(x)).numpy()
    rows, cols = (t.numpy() for t in layout.factored_means(tf.constant(x)))
    start = 0
    for shape, part in zip(layout.shapes, parts):
        size = part.size
        np.testing.assert_allclose(means[start:start + size, 0], part.mean(), rtol=1e-5, atol=1e-6)
        if len(shape) >= 2:
            grid = part.reshape(shape)
            np.testing.assert_allclose(rows[start:start + size, 0],
                                       np.broadcast_to(grid.mean(-1, keepdims=True), shape).reshape(-1), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cols[start:start + size, 1],
                                       -2 * np.broadcast_to(grid.mean(-2, keepdims=True), shape).reshape(-1), rtol=1e-5, atol=1e-6)
        else:  # no factorisation: the values themselves
            np.testing.assert_array_equal(rows[start:start + size], x[start:start + size])
        start += size
    assert layout.factored().numpy().tolist() == [True] * 12 + [False] * 5 + [True] * 24 + [False]


def test_a_traced_step_holds_no_constant_as_large_as_the_model(rule_cls):
    """Per-coordinate index constants are copied into every traced step: 80 steps of a 1.6M-coordinate
    autoencoder's PES meta step serialised past the 2 GB limit of a FunctionDef.  The graph must not grow
    with the number of coordinates."""
    def graph_bytes(shapes):
        layout = Layout(shapes)
        rule = rule_cls(seed=0)
        n = layout.num_coordinates
        spec = tf.TensorSpec([n], tf.float32)
        state = tf.TensorSpec([n, rule.state_size], tf.float32)
        step = tf.function(lambda g, p, s: apply_rule(rule, g, p, s, tf.constant(0, tf.int64), layout))
        return step.get_concrete_function(spec, spec, state).graph.as_graph_def().ByteSize()

    small, large = graph_bytes(((3, 4), (4,), (4, 2))), graph_bytes(((300, 400), (400,), (400, 200)))
    assert large < small + 4096, (small, large)


def _fit(rule_cls, fused, steps=4, jit_compile=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="tanh"),
                              keras.layers.Flatten(), keras.layers.Dense(4)])
    optimizer = l2o_tf.LearnedOptimizer(rule_cls(seed=1, step_mult=0.01), fused=fused, jit_compile=jit_compile)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(8 * steps, 6, 6, 1)).astype("float32"), gen.integers(0, 4, 8 * steps)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return [w.numpy() for w in model.trainable_weights]


def test_fused_equals_per_variable_in_fit(rule_cls):
    per_variable, fused = _fit(rule_cls, False), _fit(rule_cls, True)
    for a, b in zip(per_variable, fused):
        np.testing.assert_allclose(a, b, atol=1e-6)
    keras.utils.set_random_seed(0)
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(per_variable, _initial_weights()))  # it moved


def test_xla_compiled_step_equals_the_plain_one(rule_cls):
    """The per-tensor statistics compile with XLA (no sorted-segment ops)."""
    for a, b in zip(_fit(rule_cls, True), _fit(rule_cls, True, jit_compile=True)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _initial_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="tanh"),
                              keras.layers.Flatten(), keras.layers.Dense(4)])
    return [w.numpy() for w in model.trainable_weights]


class GivenGradients(tasks.Task):
    """loss = sum_i <params_i, g_t,i>: its gradient at step t is exactly the given g_t (a list of tensors)."""

    def __init__(self, grads):
        self.grads = [tf.constant(np.stack(g)) for g in zip(*grads)]

    def init_params(self, seed):
        return [tf.constant(v) for v in _values(SHAPES, 99)]

    def train_batch(self, seed, step):
        return [g[step] for g in self.grads]

    def loss(self, params, batch):
        return tf.add_n([tf.reduce_sum(p * g) for p, g in zip(params, batch)])


def test_keras_unroll_and_export_give_the_same_updates(rule_cls, tmp_path):
    rule = rule_cls(seed=3, step_mult=0.01)
    steps = 5
    grads = [_values(SHAPES, 10 + t) for t in range(steps)]
    task = GivenGradients(grads)
    params = task.init_params(0)
    layout = Layout.of(params)

    state = rule.initial_state(layout.num_coordinates)
    unrolled, _, _ = unroll_lib.run(task, rule, params, state, tf.constant(0, tf.int64), 0, tf.constant(steps))
    unrolled = [p.numpy() for p in unrolled]

    variables = [tf.Variable(p) for p in params]
    optimizer = l2o_tf.LearnedOptimizer(rule, fused=True)
    for g in grads:
        optimizer.apply_gradients(zip([tf.constant(x) for x in g], variables))
    for a, b in zip(unrolled, variables):
        np.testing.assert_allclose(a, b.numpy().reshape(a.shape), atol=1e-6)

    loaded = tf.saved_model.load(export_saved_model(rule, str(tmp_path / "e"), layout=params))
    flat = unroll_lib.flatten(params)
    served_state = loaded.init_state(flat)["state"]
    for t, g in enumerate(grads):
        out = loaded.step(unroll_lib.flatten([tf.constant(x) for x in g]), flat, served_state, tf.constant(t, tf.int64))
        flat, served_state = flat + out["updates"], out["state"]
    np.testing.assert_allclose(flat.numpy(), unroll_lib.flatten(unrolled).numpy(), atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="as many coordinates as the layout of the export"):
        loaded.step(tf.zeros([5]), tf.zeros([5]), tf.zeros([5, rule.state_size]), tf.constant(0, tf.int64))
    assert load_saved_model(str(tmp_path / "e")).rule.metadata["layout"] == layout.to_json()


def test_export_without_a_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="export it with the layout"):
        export_saved_model(rules.AdafacMLP(), str(tmp_path / "e"))


def test_meta_gradient_matches_finite_differences(rule_cls):
    rule = rule_cls(seed=2, hidden_size=6, step_mult=0.05, exp_mult=0.3)
    task = tasks.get("quadratic", batch_size=4, dim=5)
    params = task.init_params(0)
    state = random_rule_state(rule, sum(p.shape.num_elements() for p in params), 1)
    state = tf.abs(state)  # accumulators of squares are >= 0
    if isinstance(rule, rules.HypergradientScale):  # a previous update of a step's size, a scale inside its bounds
        state = tf.concat([state[:, :-2], 0.05 * state[:, -2:-1], tf.fill([state.shape[0], 1], 0.3)], axis=1)

    def meta_loss(weights):
        return stateless_unroll(rule, weights, task, params, state, UnrollConfig(4)).meta_loss

    directional_fd_check(meta_loss, [w.value for w in rule.trainable_weights], eps=1e-2, rtol=3e-2, atol=1e-5)


def test_config_round_trips_exactly(base_rule_cls):
    rule = base_rule_cls(hidden_size=5, hidden_layers=1, momentum_decays=(0.5, 0.9), adafactor_decays=(0.9, 0.99), seed=4)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rule))
    assert clone.get_config() == rule.get_config() and clone.state_size == rule.state_size
    assert rule.state_size == 2 + 1 + 4 + rule.context_size
    for a, b in zip(rule.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    optimizer = l2o_tf.LearnedOptimizer(rule)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    v, w = tf.Variable(_values([(3, 4)], 0)[0]), tf.Variable(_values([(3, 4)], 0)[0])
    for g in _values([(3, 4)] * 3, 1):
        optimizer.apply_gradients([(tf.constant(g), v)])
        again.apply_gradients([(tf.constant(g), w)])
    np.testing.assert_array_equal(v.numpy(), w.numpy())


def test_needs_no_horizon_and_starts_finite():
    """The step features use the step count alone: no total number of steps is passed anywhere."""
    rule = rules.AdafacMLP(seed=0)
    for step in (0, 7, 10**6):
        updates, state = rule(tf.constant([0.0, 1e-3, -2.0]), tf.zeros([3]), rule.initial_state(3), tf.constant(step, tf.int64))
        assert np.all(np.isfinite(updates.numpy())) and np.all(np.isfinite(state.numpy()))
    assert rule.nominal_step == 1e-3


def test_hierarchical_context_is_one_state_per_tensor_and_changes_the_step():
    """The GRU state is the same for every coordinate of a tensor, differs between tensors, and feeds the MLP."""
    rule = rules.Hierarchical(seed=5, step_mult=0.01)
    layout = Layout(((3, 4), (6,)))
    grads, params = (tf.constant(v) for v in (_values([(18,)], 0)[0], _values([(18,)], 1)[0]))
    updates, state = rule(grads, params, rule.initial_state(18), tf.constant(0, tf.int64), layout=layout)
    context = state.numpy()[:, -rule.context_size:]
    assert np.all(context[:12] == context[0]) and np.all(context[12:] == context[12])
    assert np.abs(context[0] - context[12]).max() > 1e-4
    other_context = tf.concat([state[:, :-rule.context_size], tf.zeros_like(state[:, -rule.context_size:])], axis=1)
    again, _ = rule(grads, params, other_context, tf.constant(1, tf.int64), layout=layout)
    with_context, _ = rule(grads, params, state, tf.constant(1, tf.int64), layout=layout)
    assert np.abs(again.numpy() - with_context.numpy()).max() > 0
    with pytest.raises(ValueError, match="at least one momentum"):
        rules.AdafacMLP(momentum_decays=(), adafactor_decays=())
    with pytest.raises(ValueError, match="as many momentum decays as Adafactor decays"):
        rules.AdafacMLP(momentum_decays=(0.9,))


def test_hierarchical_warm_started_from_adafac_mlp_begins_as_its_update_and_meta_trains_the_context(tmp_path):
    """--init_from a trained AdafacMLP into --rule=hierarchical: the same updates over several steps (the context
    rows start at zero), then meta-training moves those rows; a different MLP config is refused by name."""
    source = rules.AdafacMLP(seed=3, step_mult=0.01)
    for i, weight in enumerate(source.weights):  # as if trained: every weight, biases too, off its initialisation
        weight.assign(weight + 0.05 * tf.random.stateless_normal(weight.shape, (3, i)))
    rule = rules.Hierarchical(seed=9, hidden_size=4, step_mult=0.01, context_hidden=4)
    rule.warm_start_from(source)
    layout = Layout(((3, 4), (6,)))
    state, source_state = rule.initial_state(18), source.initial_state(18)
    params = tf.constant(_values([(18,)], 1)[0])
    for step in range(4):
        grads = tf.constant(_values([(18,)], step + 2)[0])
        mine, state = rule(grads, params, state, tf.constant(step, tf.int64), layout=layout)
        theirs, source_state = source(grads, params, source_state, tf.constant(step, tf.int64), layout=layout)
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-9)
        assert np.abs(state.numpy()[:, -4:]).max() > 1e-4  # the context runs; its rows just start silent
        params += mine
    with pytest.raises(ValueError, match="hidden_size"):
        rules.Hierarchical(hidden_size=8, step_mult=0.01).warm_start_from(source)

    rules_dir = tmp_path / "source"
    l2o_tf.pretrained.save_rule(source, str(rules_dir))
    config = MetaTrainConfig.from_flat(task="quadratic", task_kwargs={"batch_size": 4, "dim": 5}, rule="hierarchical",
                                       rule_kwargs={"hidden_size": 4, "step_mult": 0.01, "context_hidden": 4}, unroll=5, curriculum=(10,),
                                       meta_steps=3, meta_lr=1e-2, validate_every=1000, checkpoint_every=1000,
                                       init_from=str(rules_dir))
    trainer = MetaTrainer(config, str(tmp_path / "run"))
    trainer.train(verbose=0)
    first = trainer.rule.kernels[0].numpy()
    assert np.abs(first[-4:]).max() > 0  # meta-training grows the context from zero
    np.testing.assert_allclose(first[:-4], source.kernels[0].numpy(), atol=0.05)  # 3 small steps from the source
    fresh = rules.Hierarchical(seed=9, hidden_size=4, context_hidden=4).kernels[0].numpy()[:-4]
    assert np.abs(fresh - source.kernels[0].numpy()).max() > 0.2  # not where its own seed starts


@pytest.mark.parametrize("name", sorted(RULES))
def test_meta_training(name, tmp_path):
    config = MetaTrainConfig.from_flat(task="quadratic", task_kwargs={"batch_size": 4, "dim": 5}, rule=name,
                                       rule_kwargs={"step_mult": 0.05}, unroll=5, curriculum=(10,), meta_steps=4,
                                       meta_lr=1e-2, validate_every=1000, checkpoint_every=1000)
    trainer = MetaTrainer(config, str(tmp_path))
    before = [w.numpy().copy() for w in trainer.rule.weights]
    trainer.train(verbose=0)
    assert any(np.abs(a - b.numpy()).max() > 0 for a, b in zip(before, trainer.rule.weights))
    assert isinstance(l2o_tf.pretrained.load_rule(str(tmp_path)), RULES[name])


def test_adam_prior_with_zero_output_is_keras_adam():
    """An untrained ``AdafacMLP(adam_prior=1, zero_init_output=True)`` is Adam at ``step_mult``: training starts
    from Adam and the network only adds corrections; with the output layer nonzero it moves away."""
    def fit(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mse")
        x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
        model.fit(x, x[:, :1] ** 2, batch_size=16, epochs=3, verbose=0, shuffle=False)
        return np.concatenate([w.numpy().ravel() for w in model.weights])

    prior = rules.AdafacMLP(adam_prior=1.0, zero_init_output=True, step_mult=3e-3)
    adam = fit(keras.optimizers.Adam(3e-3))
    np.testing.assert_allclose(fit(l2o_tf.LearnedOptimizer(prior)), adam, atol=1e-6)
    prior.kernels[-1].assign(tf.fill(prior.kernels[-1].shape, 0.1))
    assert np.abs(fit(l2o_tf.LearnedOptimizer(prior)) - adam).max() > 1e-3
    with pytest.raises(ValueError, match="adam_prior >= 0"):
        rules.AdafacMLP(adam_prior=-1.0)


def test_step_horizon_reads_the_progress_features_at_the_horizon_past_it(base_rule_cls):
    """With ``step_horizon=H`` the step embedding is read at ``min(t, H)``: before H the rule is the plain one,
    past it every step is the plain rule's step H (same features, state and weights); the Adam prior's bias
    correction still uses the true step.  A rule saved without it keeps its config (and so its fingerprint)."""
    plain = base_rule_cls(hidden_size=5, seed=3, step_mult=0.01)
    capped = base_rule_cls.from_config(dict(plain.get_config(), step_horizon=20))
    for target, source in zip(capped.weights, plain.weights):
        target.assign(source.value)
    layout = Layout(((3, 4), (6,)))
    grads, params = (tf.constant(v) for v in _values([(18,)] * 2, 5))
    state = plain.initial_state(18)

    def step(rule, t):
        return rule(grads, params, state, tf.constant(t, tf.int64), layout=layout)[0].numpy()

    np.testing.assert_array_equal(step(capped, 7), step(plain, 7))
    np.testing.assert_array_equal(step(capped, 20), step(plain, 20))
    np.testing.assert_allclose(step(capped, 500), step(plain, 20), rtol=1e-6, atol=1e-9)
    assert np.abs(step(plain, 500) - step(plain, 20)).max() > 1e-6  # the horizon is what made them equal
    assert "step_horizon" not in plain.get_config() and capped.get_config()["step_horizon"] == 20
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(capped))
    assert clone.step_horizon == 20
    with pytest.raises(ValueError, match="step_horizon to be a whole number >= 0"):
        base_rule_cls(step_horizon=-1)
