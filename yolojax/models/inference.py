"""Variables prepared for inference: each Conv -> BatchNorm pair folded into one convolution, as the reference
fuses them for prediction and export.

The plain eval forward casts every kernel to the compute dtype, lays it out for cuDNN and applies each BatchNorm
from its four vectors on every call. Small-batch inference is launch-bound, so those ~60 small kernels and ~300
arguments cost more than their arithmetic. Folded once, a pair is one kernel (already in the compute dtype, and
optionally in cuDNN's OHWI filter layout) and one bias added before the SiLU. Packed (`pack=True`), the folded
variables travel as one buffer per dtype: each program argument costs host time on every call, and the ~125 arrays
of a folded v8n cost more of it than the batch-1 forward's kernels leave.
"""
from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from yolojax.models.layers import BN_EPSILON, HALF_MIN_INPUT_CHANNELS, BatchNorm, Conv
from yolojax.ops.flat import FlatLayout


@flax.struct.dataclass
class PackedArrays:
    """A pytree of arrays kept as one 1-D buffer per dtype. buffers: {dtype name: (n,) array}; treedef and groups
    ((dtype name, leaf indices, their `FlatLayout`) per buffer) are static. `unpack()` (inside a program: slices of
    the buffers) gives the pytree back."""

    buffers: dict
    treedef: Any = flax.struct.field(pytree_node=False)
    groups: tuple = flax.struct.field(pytree_node=False)

    def unpack(self):
        arrays: list = [None] * self.treedef.num_leaves
        for dtype, indices, layout in self.groups:
            for i, array in zip(indices, layout.unflatten(self.buffers[dtype])):
                arrays[i] = array
        return jax.tree.unflatten(self.treedef, arrays)


def pack_arrays(tree) -> PackedArrays:
    """`tree`'s arrays as one buffer per dtype (see PackedArrays)."""
    arrays, treedef = jax.tree.flatten(tree)
    by_dtype: dict[str, list[int]] = {}
    for i, array in enumerate(arrays):
        by_dtype.setdefault(jnp.dtype(array.dtype).name, []).append(i)
    groups = tuple((dtype, tuple(indices), FlatLayout.of([arrays[i] for i in indices]))
                   for dtype, indices in by_dtype.items())
    buffers = {dtype: layout.flatten([arrays[i] for i in indices], dtype) for dtype, indices, layout in groups}
    return PackedArrays(buffers, treedef, groups)


@flax.struct.dataclass
class FoldedVariables:
    """variables: {"params", "batch_stats"} with every folded pair's conv kernel and BatchNorm bias and without its
    statistics (the other modules' variables as they were), or those packed (`PackedArrays`). folded: module paths of
    the folded pairs. ohwi: paths of the Conv modules whose kernel is stored (c_out, k, k, c_in) instead of
    (k, k, c_in, c_out). A pytree: pass it through jit as any variables."""

    variables: Any
    folded: frozenset = flax.struct.field(pytree_node=False, default=frozenset())
    ohwi: frozenset = flax.struct.field(pytree_node=False, default=frozenset())

    def tree(self) -> dict:
        """The variables as `model.apply` takes them (unpacked, if packed)."""
        return self.variables.unpack() if isinstance(self.variables, PackedArrays) else self.variables


def fold_batchnorm(variables: dict, *, kernel_dtype: Any = jnp.float32, ohwi: bool = False,
                   pack: bool = False) -> FoldedVariables:
    """Fold each Conv -> BatchNorm (eval) pair of `variables` ({"params", "batch_stats"}): kernel * s and
    bias - mean * s, with s = scale / sqrt(var + eps), computed in float32. A pair is a module with children `conv`
    (a kernel, no bias) and `bn`. kernel_dtype: the folded kernels' dtype (the model's compute dtype, so that no
    call casts them). ohwi: store the kernels of convolutions over at least HALF_MIN_INPUT_CHANNELS channels as
    (c_out, k, k, c_in), the layout cuDNN reads for NHWC images (so that no call transposes them). pack: keep them as
    `PackedArrays` (a few program arguments instead of one per array)."""
    params = dict(variables["params"])
    stats = dict(variables.get("batch_stats", {}))
    folded, transposed = [], []

    def visit(p: dict, s: dict, path: tuple[str, ...]):
        for name, child in p.items():
            if not isinstance(child, dict):
                continue
            child = dict(child)
            p[name] = child
            sub_stats = dict(s.get(name, {}))
            if name in s:
                s[name] = sub_stats
            if "kernel" in child.get("conv", {}) and "bn" in child and "bn" in sub_stats:
                bn, moments = child["bn"], sub_stats["bn"]
                factor = jnp.asarray(bn["scale"], jnp.float32) * lax.rsqrt(
                    jnp.asarray(moments["var"], jnp.float32) + BN_EPSILON)
                kernel = (jnp.asarray(child["conv"]["kernel"], jnp.float32) * factor).astype(kernel_dtype)
                if ohwi and kernel.shape[2] >= HALF_MIN_INPUT_CHANNELS:
                    kernel = kernel.transpose(3, 0, 1, 2)
                    transposed.append(path + (name, "conv"))
                child["conv"] = {"kernel": kernel}
                child["bn"] = {"bias": jnp.asarray(bn["bias"], jnp.float32)
                               - jnp.asarray(moments["mean"], jnp.float32) * factor}
                folded.append(path + (name,))
                del sub_stats["bn"]  # no longer read: not an argument of the compiled program
            else:
                visit(child, sub_stats, path + (name,))

    visit(params, stats, ())
    out: Any = {"params": params, "batch_stats": stats}
    return FoldedVariables(pack_arrays(out) if pack else out, frozenset(folded), frozenset(transposed))


@contextlib.contextmanager
def folded_forward(variables: FoldedVariables):
    """Inside, `model.apply(variables.tree(), ...)` runs the folded pairs: each folded BatchNorm adds its bias
    (then its SiLU, if any) and each OHWI kernel convolves as such (flax method interceptors)."""

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, BatchNorm) and module.path[:-1] in variables.folded:
            x = args[0]
            y = (x.astype(jnp.float32) + module.get_variable("params", "bias")).astype(module.dtype)
            return nn.silu(y) if module.silu else y
        if isinstance(module, Conv) and module.path in variables.ohwi:
            return module.convolve(args[0], module.get_variable("params", "kernel"), "OHWI")
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        yield


def apply_folded(model: nn.Module, variables: FoldedVariables | dict, *args, **kwargs):
    """`model.apply` with folded variables (see `folded_forward`), or with plain variables as they are; inference
    only (train=False)."""
    if not isinstance(variables, FoldedVariables):
        return model.apply(variables, *args, **kwargs)
    with folded_forward(variables):
        return model.apply(variables.tree(), *args, **kwargs)
