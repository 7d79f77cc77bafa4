"""Reference YOLOv8 weights (state_dict .pt/.pth, .safetensors, or an ultralytics checkpoint with trust_pickle)
-> the yolojax weights format (`yolojax.models.weights`): `convert_file`, what `yolojax convert` runs."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.convert.mapping import (
    WeightMismatchError,
    infer_scale_and_classes,
    state_dict_to_variables,
)
from yolojax.convert.sources import WeightsFileError, load_source
from yolojax.models.weights import REQUIRED_META, load_weights, save_weights
from yolojax.models.yolov8 import SCALES, YOLOv8


def convert_file(src, dst, *, scale=None, num_classes=None, names=None, imgsz=640, trust_pickle=False):
    """Read `src`, map it onto YOLOv8(scale, num_classes), write `dst`. Returns the meta written.

    scale and num_classes default to what the weights show; given explicitly they are checked against the file.
    """
    if scale is not None and scale not in SCALES:
        raise WeightsFileError(f"convert: scale must be one of {tuple(SCALES)}, got {scale!r}")
    state, info = load_source(src, trust_pickle=trust_pickle)
    found_scale, found_nc = infer_scale_and_classes(state)
    scale = scale or found_scale
    num_classes = int(num_classes or found_nc)
    model = YOLOv8(scale, num_classes)
    template = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0))
    try:
        variables = state_dict_to_variables(state, template)
    except WeightMismatchError as err:
        raise WeightMismatchError(f"convert {src} as YOLOv8{scale} nc={num_classes}: {err}") from None
    names = list(names or info.get("names") or [str(i) for i in range(num_classes)])
    if len(names) != num_classes:
        raise WeightsFileError(f"convert: {len(names)} class names given for nc={num_classes}")
    meta = {"scale": scale, "num_classes": num_classes, "names": names, "imgsz": int(imgsz), "source": str(src)}
    save_weights(dst, variables, meta)
    return meta


def read_weights(path) -> tuple[dict, dict]:
    """`yolojax.models.weights.load_weights` (variables, meta), with each way a weights folder can be wrong (not one,
    a damaged meta.json or arrays, meta keys missing) raised as a one-line WeightsFileError naming the folder."""
    try:
        variables, meta = load_weights(path)
    except (FileNotFoundError, ValueError) as err:
        raise WeightsFileError(f"weights={path}: {str(err).removeprefix('load_weights: ').splitlines()[0]}") from err
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise WeightsFileError(f"weights={path}: meta.json lacks {', '.join(missing)} (damaged, or not written by "
                               "yolojax: export or convert the weights again)")
    return variables, meta
