"""`yolojax convert SRC DST [scale=n] [nc=80] [names=a,b,...] [imgsz=640] [--trust-pickle]`.

Imports reference YOLOv8 weights (state_dict .pt/.pth, .safetensors, or an ultralytics checkpoint with
--trust-pickle) into the yolojax weights format (`yolojax.models.weights`). scale and nc default to what the
weights show; given explicitly they are checked against the file.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from yolojax.convert.mapping import (
    WeightMismatchError,
    infer_scale_and_classes,
    state_dict_to_variables,
)
from yolojax.convert.sources import load_source
from yolojax.models.weights import save_weights
from yolojax.models.yolov8 import SCALES, YOLOv8

USAGE = __doc__


def convert_file(src, dst, *, scale=None, num_classes=None, names=None, imgsz=640, trust_pickle=False):
    """Read `src`, map it onto YOLOv8(scale, num_classes), write `dst`. Returns the meta written."""


    if scale is not None and scale not in SCALES:
        raise ValueError(f"convert: scale must be one of {tuple(SCALES)}, got {scale!r}")
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
        raise ValueError(f"convert: {len(names)} class names given for nc={num_classes}")
    meta = {"scale": scale, "num_classes": num_classes, "names": names, "imgsz": int(imgsz), "source": str(src)}
    save_weights(dst, variables, meta)
    return meta


def parse_args(argv: list[str]) -> dict:
    positional, options = [], {"trust_pickle": False}
    for arg in argv:
        if arg in ("--trust-pickle", "trust_pickle=True"):
            options["trust_pickle"] = True
        elif "=" in arg:
            key, value = arg.split("=", 1)
            if key == "scale":
                options["scale"] = value
            elif key == "nc":
                options["num_classes"] = int(value)
            elif key == "names":
                options["names"] = value.split(",")
            elif key == "imgsz":
                options["imgsz"] = int(value)
            else:
                raise ValueError(f"convert: unknown option {key!r}")
        elif arg.startswith("-"):
            raise ValueError(f"convert: unknown flag {arg!r}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise ValueError(f"convert: expected SRC and DST, got {positional}")
    return {"src": positional[0], "dst": positional[1], **options}


def cli_main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
        meta = convert_file(**args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"yolojax convert: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args['dst']}: YOLOv8{meta['scale']} nc={meta['num_classes']}")
    return 0
