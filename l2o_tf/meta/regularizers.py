"""Flatness penalties of an optimizee's loss landscape ("Learning to Generalize Provably in L2O").

Each is a function ``(loss_fn, params, ...) -> scalar`` where ``loss_fn`` maps a
list of tensors to a scalar.  All are built on Hessian-vector products from
nested ``GradientTape``s, run inside ``tf.function`` and are differentiable
with respect to anything ``params`` depends on (the rule weights, inside an
unroll), so they can be added to the meta-loss.
"""

import dataclasses

import tensorflow as tf

from l2o_tf import seeds


def _dot(xs, ys):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys)])


def hessian_vector_product(loss_fn, params, vectors):
    """``H v`` at ``params`` by reverse-over-reverse differentiation (two nested tapes)."""
    with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
            inner.watch(params)
            loss = loss_fn(params)
        grads = inner.gradient(loss, params)
        grad_dot_v = _dot(grads, vectors)
    hvp = outer.gradient(grad_dot_v, params)
    return [tf.zeros_like(p) if h is None else h for h, p in zip(hvp, params)]


def _rademacher(params, seed, index):
    return [
        2.0 * tf.cast(tf.random.stateless_uniform(tf.shape(p), seeds.probe(seed, index, i),
                                                   0, 2, tf.int32), p.dtype) - 1.0
        for i, p in enumerate(params)
    ]


def hessian_trace(loss_fn, params, num_probes=1, seed=0):
    """Hutchinson's estimate ``mean_i v_i^T H v_i`` with Rademacher probes ``v_i``.

    Unbiased; exact for a diagonal Hessian (``v_i * v_i = 1``).  Cost: one
    Hessian-vector product (about two gradients) per probe.
    """
    if num_probes < 1:
        raise ValueError(f"hessian_trace needs num_probes >= 1, got {num_probes}.")
    return _hutchinson(loss_fn, params, num_probes, seed)


def _hutchinson(loss_fn, params, num_probes, seed, scales=None):
    """``mean_i (T v_i)^T H (T v_i)``: ``tr(T H T)`` (``tr(H)`` without ``scales``) by Rademacher probes."""
    estimates = []
    for i in range(num_probes):
        v = _rademacher(params, seed, i)
        if scales is not None:
            v = [s * r for s, r in zip(scales, v)]
        estimates.append(_dot(v, hessian_vector_product(loss_fn, params, v)))
    return tf.add_n(estimates) / float(num_probes)


def adaptive_trace(loss_fn, params, num_probes=1, eta=0.01, seed=0, loss_floor=1e-4):
    """Scale-invariant sharpness: ``tr(T H T) / f`` with ``T = diag(|w| + eta)`` (Hutchinson estimate).

    Why not ``tr(H)``: it falls when the logits of a classifier saturate (Dinh et al. 2017: Hessian
    sharpness is not invariant to rescaling), which is how learned optimizers met the Hessian
    penalty.  Here each curvature ``H_ii`` is weighed by ``w_i^2`` (ASAM's adaptive
    neighbourhood, Kwon et al. 2021), so rescaling one layer by ``a`` and the next by ``1 / a``
    (a ReLU network's symmetry) leaves it unchanged (exactly at ``eta = 0``), and it is divided
    by the loss: scaling a classifier's logits by ``a`` shrinks ``H`` and ``f`` alike
    (``~exp(-a margin)``) while ``w^2`` grows, so saturation raises it.  ``eta`` keeps
    coordinates at zero (biases at initialisation) in the measure; ``loss_floor`` keeps it finite
    at zero loss.  Unbiased in the numerator: ``E[(T v)^T H (T v)] = sum_i (|w_i| + eta)^2 H_ii``
    for Rademacher ``v``, exact when ``H`` is diagonal.
    """
    if num_probes < 1 or eta < 0 or loss_floor <= 0:
        raise ValueError(f"adaptive_trace needs num_probes >= 1, eta >= 0, loss_floor > 0; got num_probes={num_probes}, "
                         f"eta={eta}, loss_floor={loss_floor}.")
    scaled_trace = _hutchinson(loss_fn, params, num_probes, seed, scales=[tf.abs(p) + eta for p in params])
    return scaled_trace / (loss_fn(params) + loss_floor)


def hessian_top_eigenvalue(loss_fn, params, num_iters=20, seed=0):
    """The largest-magnitude Hessian eigenvalue by power iteration, as a Rayleigh quotient.

    The iterations run on a stopped-gradient vector; only the final
    ``v^T H v`` is differentiated, which by Hellmann-Feynman is the derivative of
    the eigenvalue.  Cost: ``num_iters + 1`` Hessian-vector products.
    """
    if num_iters < 1:
        raise ValueError(f"hessian_top_eigenvalue needs num_iters >= 1, got {num_iters}.")
    v = _rademacher(params, seed, 0)
    for _ in range(num_iters):
        hv = [tf.stop_gradient(h) for h in hessian_vector_product(loss_fn, params, v)]
        norm = tf.sqrt(_dot(hv, hv)) + 1e-12
        v = [h / norm for h in hv]
    return _dot(v, hessian_vector_product(loss_fn, params, v))


def local_entropy(loss_fn, params, gamma=1.0, num_steps=20, step_size=0.05, temperature=1e-4, seed=0):
    """A surrogate whose gradient is that of the negative local entropy ``-F(w)``.

    Chaudhari et al.'s local entropy is
    ``F(w) = log int exp(-f(w') - gamma/2 ||w - w'||^2) dw'`` and
    ``grad(-F)(w) = gamma (w - E[w'])`` under the Gibbs measure
    ``p(w') ~ exp(-(f(w') + gamma/2 ||w - w'||^2) / T)`` (Entropy-SGD).
    ``E[w']`` is estimated as in Entropy-SGD: ``num_steps`` steps of SGLD from
    ``w' = w`` (step ``step_size``, noise ``sqrt(2 step_size T)``), averaging
    the second half of the chain.  The returned value is
    ``gamma/2 ||w - stop_gradient(E[w'])||^2``: its gradient with respect to
    ``w`` (and, through ``w``, to the rule weights) is ``gamma (w - E[w'])``.
    Cost: ``num_steps`` gradients of ``f``; the chain itself is not
    differentiated.
    """
    if gamma <= 0 or num_steps < 2 or step_size <= 0 or temperature < 0:
        raise ValueError(
            f"local_entropy needs gamma > 0, num_steps >= 2, step_size > 0, temperature >= 0; got "
            f"gamma={gamma}, num_steps={num_steps}, step_size={step_size}, temperature={temperature}."
        )
    anchor = [tf.stop_gradient(p) for p in params]
    sample = list(anchor)
    mean = [tf.zeros_like(p) for p in params]
    burn_in = num_steps // 2
    noise_scale = (2.0 * step_size * temperature) ** 0.5
    for k in range(num_steps):
        with tf.GradientTape() as tape:
            tape.watch(sample)
            loss = loss_fn(sample)
        grads = tape.gradient(loss, sample)
        noise = [tf.random.stateless_normal(tf.shape(p), seeds.sgld_noise(seed, k, i), dtype=p.dtype)
                 for i, p in enumerate(sample)]
        sample = [
            s - step_size * (g + gamma * (s - a)) + noise_scale * n
            for s, g, a, n in zip(sample, grads, anchor, noise)
        ]
        if k >= burn_in:
            mean = [m + s / float(num_steps - burn_in) for m, s in zip(mean, sample)]
    mean = [tf.stop_gradient(m) for m in mean]
    return 0.5 * gamma * tf.add_n([tf.reduce_sum(tf.square(p - m)) for p, m in zip(params, mean)])


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A configured flatness penalty for the meta-loss: ``weight * R`` every ``every``-th step.

    ``options`` go to the penalty function (``num_probes``, ``num_iters``,
    ``gamma``, ``num_steps``...).
    """

    name: str
    weight: float
    every: int = 1
    options: tuple = ()

    def __post_init__(self):
        get(self.name)
        if self.weight < 0:
            raise ValueError(f"regularizer weight must be >= 0, got {self.weight}.")
        if self.every < 1:
            raise ValueError(f"reg_every must be >= 1, got {self.every}.")

    def __call__(self, loss_fn, params, seed):
        return get(self.name)(loss_fn, params, seed=seed, **dict(self.options))


PENALTIES = {
    "hessian_trace": hessian_trace,
    "hessian_eig": hessian_top_eigenvalue,
    "adaptive_trace": adaptive_trace,
    "local_entropy": local_entropy,
}


def get(name):
    """A penalty by its flag name: ``hessian_trace``, ``hessian_eig``, ``adaptive_trace`` or ``local_entropy``."""
    if name not in PENALTIES:
        raise ValueError(f"Unknown regularizer {name!r}; known: none, {', '.join(sorted(PENALTIES))}.")
    return PENALTIES[name]
