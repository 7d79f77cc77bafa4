"""An exported function -> an .onnx file through jax2onnx (the optional [export] extra), metadata included."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import flax.linen as nn
import jax

from yolojax.export.graph_passes import lean_graph
from yolojax.export.metadata import to_props

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 24)  # what the graph needs (13: Squeeze with axes as an input) to jax2onnx's newest


@contextlib.contextmanager
def _max_pool_for_jax2onnx():
    """jax2onnx replaces `flax.linen.max_pool` by a version that takes window_shape / padding by keyword and
    padding only as a name; the model's SPPF passes them by position with explicit 'same' pads (k // 2, stride 1).
    This adapter, active inside the traced function only, passes them on in that form."""
    patched = nn.max_pool

    def max_pool(x, window_shape, strides=None, padding="VALID"):
        same = tuple((k // 2, k // 2) for k in window_shape)
        if strides not in (None, (1,) * len(window_shape)) or tuple(map(tuple, padding)) != same:
            raise NotImplementedError(f"ONNX export: max_pool window {window_shape}, strides {strides}, padding "
                                      f"{padding} has no jax2onnx form")
        return patched(x, window_shape=tuple(window_shape), strides=strides, padding="SAME")

    nn.max_pool = max_pool
    try:
        yield
    finally:
        nn.max_pool = patched


@contextlib.contextmanager
def _no_scan_extent_from_scatter():
    """jax2onnx's `lax.scan` lowering takes the leading dimension of the first scatter's updates anywhere in the body
    for the number of rows of every scanned input, and Expands each per-step input to it. In the per-image NMS loop
    that scatter writes one NMS tile (at most 512 rows) while the scanned inputs hold one row per anchor: the guess
    holds only while all anchors fit one tile (up to imgsz 128), beyond it ONNX Runtime refuses the Expand. This
    context, active during the conversion only, makes that guess find nothing: the scanned inputs keep their own
    shapes."""
    from jax2onnx.plugins.jax.lax import scan as scan_plugin

    guess = getattr(scan_plugin, "_static_scatter_extent", None)
    if guess is None:  # a jax2onnx without the guess
        yield
        return
    scan_plugin._static_scatter_extent = lambda jaxpr: None
    try:
        yield
    finally:
        scan_plugin._static_scatter_extent = guess


def _stamp_output_shapes(model, fn: Callable, input_specs: Sequence[jax.ShapeDtypeStruct]):
    """The graph outputs' declared shapes set to those of `fn` (jax2onnx leaves placeholder dimensions on the
    outputs of a Loop). Every output leads with the batch dimension of the first input (an int or a name)."""
    batch = input_specs[0].shape[0]
    concrete = [jax.ShapeDtypeStruct(tuple(1 if isinstance(d, str) else d for d in s.shape), s.dtype)
                for s in input_specs]
    for output, aval in zip(model.graph.output, jax.tree_util.tree_leaves(jax.eval_shape(fn, *concrete))):
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for size in (batch, *aval.shape[1:]):
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = int(size)


def export_onnx(fn: Callable, input_specs: Sequence[jax.ShapeDtypeStruct], input_names: Sequence[str],
                output_names: Sequence[str], opset: int, meta: dict, out: Path) -> Path:
    """Convert `fn` (inputs as `input_specs`: a str dimension is symbolic) at `opset`, store `meta` as
    metadata_props, write `out`. Returns `out`."""
    import jax2onnx
    import onnx

    def traced(*args):
        with _max_pool_for_jax2onnx():
            return fn(*args)

    logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # per-value type notes on jax2onnx's intermediate values
    with _no_scan_extent_from_scatter():
        model = jax2onnx.to_onnx(traced, inputs=list(input_specs), opset=opset, model_name=meta.get("name", "yolojax"),
                                 input_names=list(input_names), output_names=list(output_names))
    # jax2onnx stamps some intermediate shapes in NHWC where the value is NCHW; the runtime infers its own
    del model.graph.value_info[:]
    lean_graph(model)
    _stamp_output_shapes(model, fn, input_specs)
    onnx.helper.set_model_props(model, to_props(meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out
