"""Pytrees laid end to end in one fp32 buffer, and back.

The training state keeps the parameters, their gradient sum, the optimizer's buffers and the EMA each as ONE flat
array. The update is then a few elementwise passes over a few million values, where over a pytree it is a pass per
leaf and per buffer: YOLOv8 has a few hundred leaves, so a few thousand more operations for XLA to compile and
kernels to launch. The devices' exchange (`yolojax.train.step.psum_flat`) uses the same layout for its one
all-reduce. Folded inference weights travel as one such buffer per dtype (`yolojax.models.inference.PackedArrays`):
a jitted program's every argument costs host time on each call.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class FlatLayout:
    """Where each leaf of a pytree sits in a flat fp32 buffer (static and hashable: it can be a jit static argument
    or the static part of a pytree).

    treedef: the tree's structure; shapes, dtypes: per leaf, in `jax.tree.leaves` order; order: leaf indices in
    buffer order (a permutation); offsets: where each leaf (by leaf index) starts in the buffer; size: total values.
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    order: tuple[int, ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def of(cls, tree: Any, order: Sequence[int] | None = None) -> FlatLayout:
        """The layout of `tree` (arrays or shape/dtype structs), leaves in `order` (default: tree order)."""
        leaves, treedef = jax.tree.flatten(tree)
        shapes = tuple(tuple(int(d) for d in np.shape(x)) for x in leaves)
        dtypes = tuple(np.dtype(x.dtype) for x in leaves)
        order = tuple(range(len(leaves))) if order is None else tuple(int(i) for i in order)
        if sorted(order) != list(range(len(leaves))):
            raise ValueError(f"order must be a permutation of the {len(leaves)} leaves")
        offsets, at = [0] * len(leaves), 0
        for i in order:
            offsets[i] = at
            at += math.prod(shapes[i])
        return cls(treedef, shapes, dtypes, order, tuple(offsets), at)

    def flatten(self, tree: Any, dtype: Any = jnp.float32) -> jax.Array:
        """tree (of this layout) -> (size,) buffer of `dtype`, leaves in buffer order."""
        leaves = self.treedef.flatten_up_to(tree)
        parts = [jnp.ravel(leaves[i]).astype(dtype) for i in self.order]
        return jnp.concatenate(parts) if parts else jnp.zeros((0,), dtype)

    def unflatten(self, flat: Any, float_dtype: Any = None) -> Any:
        """(size,) buffer (jax or numpy) -> the tree, each leaf with its shape and dtype (slices of `flat`).
        float_dtype: the dtype of every floating-point leaf instead of its own (a float64 state's precision)."""
        def dtype(d):
            return float_dtype if float_dtype is not None and jnp.issubdtype(d, jnp.floating) else d

        leaves = [flat[o:o + math.prod(s)].reshape(s).astype(dtype(d))
                  for o, s, d in zip(self.offsets, self.shapes, self.dtypes)]
        return self.treedef.unflatten(leaves)

    def ends(self, group_of_leaf: Callable[[int], int], groups: int) -> tuple[int, ...]:
        """Where each of `groups` contiguous groups ends in the buffer, when the buffer order sorts leaves by
        `group_of_leaf(leaf index)` (raises otherwise)."""
        ends, at, last = [0] * groups, 0, 0
        for i in self.order:
            group = group_of_leaf(i)
            if group < last:
                raise ValueError("the buffer order does not keep each group together")
            at += math.prod(self.shapes[i])
            for g in range(group, groups):
                ends[g] = at
            last = group
        return tuple(ends)
