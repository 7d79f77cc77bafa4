"""`yolojax data preview|shapes ...`: look at augmented batches, or generate the shapes dataset.

    yolojax data preview [data=PATH] [split=train] [imgsz=640] [batch=16] [seed=0] [epoch=0] [out=train_batch0.jpg]
                         [any default.yaml augmentation key=value ...]
    yolojax data shapes [root=PATH] [seed=0] [num_train=400] [num_val=100] [imgsz=160] [workers=0]
"""
from __future__ import annotations

import sys

import cv2
import yaml

from yolojax.data import build_dataset
from yolojax.data.preview import draw_batch_grid
from yolojax.data.shapes import ensure_shapes_dataset

USAGE = __doc__.split("\n", 2)[2]


def parse_overrides(argv):
    """`key=value` strings -> dict, values parsed as YAML scalars (numbers, booleans, null)."""
    out = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {arg!r}")
        out[key] = yaml.safe_load(value)
    return out


def preview(opts) -> str:

    split = opts.pop("split", "train")
    seed = int(opts.pop("seed", 0))
    epoch = int(opts.pop("epoch", 0))
    out = str(opts.pop("out", f"{split}_batch0.jpg"))
    cfg = {"workers": 0, **opts}
    ds = build_dataset(cfg, split, seed)
    iterator = ds.iterator(epoch, workers=0)
    batch = next(iterator)
    grid = draw_batch_grid(batch, ds.names)
    if not cv2.imwrite(out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{out}: could not write the preview image")
    return out


def cli_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, opts = argv[0], parse_overrides(argv[1:])
    if command == "preview":
        print(f"wrote {preview(opts)}")
        return 0
    if command == "shapes":

        print(ensure_shapes_dataset(opts.pop("root", None), **opts))
        return 0
    print(f"yolojax data: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2
