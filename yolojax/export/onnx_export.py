"""An exported function -> an .onnx file through jax2onnx (the optional [export] extra), metadata included."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import flax.linen as nn
import jax

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


def export_onnx(fn: Callable, input_specs: Sequence[jax.ShapeDtypeStruct | tuple], input_names: Sequence[str],
                output_names: Sequence[str], opset: int, meta: dict, out: Path) -> Path:
    """Convert `fn` (inputs as `input_specs`: a str dimension is symbolic) at `opset`, store `meta` as
    metadata_props, write `out`. Returns `out`."""
    import jax2onnx
    import onnx

    def traced(*args):
        with _max_pool_for_jax2onnx():
            return fn(*args)

    logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # per-value type notes on jax2onnx's intermediate values
    model = jax2onnx.to_onnx(traced, inputs=list(input_specs), opset=opset, model_name=meta.get("name", "yolojax"),
                             input_names=list(input_names), output_names=list(output_names))
    # jax2onnx stamps some intermediate shapes in NHWC where the value is NCHW; the runtime infers its own
    del model.graph.value_info[:]
    onnx.helper.set_model_props(model, to_props(meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out
