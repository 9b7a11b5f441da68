"""The layout of a rule's flat coordinates: which tensor each belongs to, and each tensor's shape.

Rules see one flat vector of coordinates.  A layout-aware rule (``UpdateRule.LAYOUT_AWARE``)
also receives a :class:`Layout` and computes per-tensor statistics with it: means over a
tensor (second-moment normalisation, norms) and factored row / column means over a tensor's
last two dimensions (Adafactor).  The layout is static (Python shapes), so the same rule
traces to the same graph in ``fit`` (one tensor per variable, or all variables fused), in the
meta-training unroll and in an export, which records it.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Layout:
    """Tensor shapes, in the order their flattened coordinates are concatenated."""

    shapes: tuple

    def __post_init__(self):
        shapes = tuple(tuple(int(d) for d in shape) or (1,) for shape in self.shapes)  # a scalar is one coordinate
        if not shapes or any(d < 1 for shape in shapes for d in shape):
            raise ValueError(f"a layout needs at least one tensor of non-empty shape, got {list(self.shapes)}.")
        object.__setattr__(self, "shapes", shapes)

    @classmethod
    def of(cls, tensors):
        """The layout of a list of tensors or variables."""
        return cls(tuple(tuple(t.shape) for t in tensors))

    @classmethod
    def flat(cls, num_coordinates):
        """One 1-D tensor: the layout of a bare vector of coordinates."""
        return cls(((int(num_coordinates),),))

    @classmethod
    def given_or_flat(cls, layout, coordinates, owner):
        """``layout``, or where none is given one 1-D tensor as long as ``coordinates`` (a bare vector: its
        length must be static); ``owner`` names the rule in the error."""
        if layout is not None:
            return layout
        if coordinates.shape[0] is None:
            raise ValueError(f"{owner} needs the layout of its coordinates (or a static number of them).")
        return cls.flat(coordinates.shape[0])

    @functools.cached_property
    def sizes(self):
        return [int(np.prod(shape)) for shape in self.shapes]

    @property
    def num_coordinates(self):
        return sum(self.sizes)

    @property
    def num_tensors(self):
        return len(self.shapes)

    def tensor_mean(self, x, broadcastable=False):
        """Mean of ``x`` ``[n, ...]`` over each tensor's coordinates, broadcast back to ``[n, ...]``.

        With ``broadcastable``, a one-tensor layout's mean comes back as ``[1, ...]``: it broadcasts
        against ``x`` without materialising ``[n, ...]`` (``fit``'s per-variable step: one pass less).
        """
        if broadcastable and self.num_tensors == 1:
            return tf.reduce_mean(x, axis=0, keepdims=True)
        return self.broadcast(tf.stack([tf.reduce_mean(part, axis=0) for part in tf.split(x, self.sizes)]))

    def first_of_each(self, x):
        """Row of ``x`` ``[n, ...]`` at each tensor's first coordinate: ``[num_tensors, ...]`` (per-tensor values
        stored with every coordinate of their tensor)."""
        return tf.gather(x, tf.constant(np.cumsum([0] + self.sizes[:-1]), tf.int32))

    def broadcast(self, per_tensor):
        """``[num_tensors, ...]`` to ``[n, ...]``: each tensor's value at each of its coordinates.

        Built per tensor from the static sizes: a per-coordinate index (``[n]`` integers) would be a graph
        constant as large as the model, copied into every traced step; large models' unrolls then exceed
        the 2 GB limit of a serialised function.
        """
        rest = tf.shape(per_tensor)[1:]
        return tf.concat([tf.broadcast_to(per_tensor[j][None], tf.concat([[size], rest], 0))
                          for j, size in enumerate(self.sizes)], axis=0)

    def factored_means(self, x):
        """Adafactor's row and column means of ``x`` ``[n, k]`` per tensor, broadcast to ``[n, k]``.

        For a tensor of shape ``[..., R, C]`` the row mean averages over ``C`` and the column
        mean over ``R``; tensors of rank below 2 have no factorisation and get ``x`` itself
        for both (see :meth:`factored`).
        """
        rows, cols = [], []
        for shape, part in zip(self.shapes, tf.split(x, self.sizes)):
            if len(shape) < 2:
                rows.append(part)
                cols.append(part)
                continue
            k = part.shape[-1]
            grid = tf.reshape(part, shape + (k,))
            rows.append(tf.reshape(tf.broadcast_to(tf.reduce_mean(grid, axis=-2, keepdims=True), grid.shape), [-1, k]))
            cols.append(tf.reshape(tf.broadcast_to(tf.reduce_mean(grid, axis=-3, keepdims=True), grid.shape), [-1, k]))
        return tf.concat(rows, axis=0), tf.concat(cols, axis=0)

    @property
    def factored_kinds(self):
        """Per tensor, whether it has a row / column factorisation (rank >= 2)."""
        return tuple(len(s) >= 2 for s in self.shapes)

    def factored(self):
        """Per coordinate, whether its tensor has a row / column factorisation (rank >= 2): bool ``[n]``."""
        return self.broadcast(tf.constant(self.factored_kinds))

    def to_json(self):
        return [list(shape) for shape in self.shapes]
