"""`yolojax data preview|shapes`: a grid of augmented batch images (`yolojax.data.preview`), or the shapes dataset
generated (`yolojax.data.ensure_shapes_dataset`)."""
from __future__ import annotations

import inspect

import cv2

from yolojax.cli import args
from yolojax.data import build_dataset
from yolojax.data.pipeline import DEFAULTS as DATASET_DEFAULTS
from yolojax.data.preview import draw_batch_grid
from yolojax.data.shapes import ensure_shapes_dataset
from yolojax.data.sources import NoLabelsError
from yolojax.train.config import ConfigError, default_values, suggestion

# preview builds one batch in this process (no worker processes), so `workers` is not among its keys
_PREVIEW_CONFIG_KEYS = [k for k in default_values() if k in DATASET_DEFAULTS and k != "workers"]
PREVIEW = args.Command(
    name="data preview",
    summary="Draw the first batch of an epoch, augmented as training sees it, with its boxes (like the "
            "reference's train_batch0.jpg). Any dataset or augmentation key of default.yaml applies.",
    keys={
        "split": args.own_key("train", "(str) split of the data yaml"),
        "epoch": args.own_key(0, "(int) which epoch's batch (the order and augmentation depend on it)"),
        "out": args.own_key(None, "(str) image file to write (default: <split>_batch0.jpg)", types=(str,)),
        "rect": args.own_key(False, "(bool) val split: the reference's rectangular batches"),
        "seed": args.config_key("seed"),
        **{k: args.config_key(k, DATASET_DEFAULTS[k]) for k in _PREVIEW_CONFIG_KEYS},
        "data": args.config_key("data", DATASET_DEFAULTS["data"], args.DATA_HELP),
    },
)

_SHAPES_HELP = {
    "root": "(str) folder to write into (default: a folder per setting under ~/.cache/yolojax)",
    "seed": "(int) the dataset's seed",
    "num_train": "(int) train images",
    "num_val": "(int) val images",
    "imgsz": "(int) long side of every image, pixels",
    "workers": "(int) processes that write the images (0: this one); the files do not depend on it",
}
_SHAPES_TYPES = {"root": (str,)}  # the only parameter whose default (None) does not show its type
SHAPES = args.Command(
    name="data shapes",
    summary="Generate the procedural 3-class shapes dataset once (deterministic in every key) and print its data "
            "yaml path.",
    keys={name: args.own_key(param.default, _SHAPES_HELP[name], _SHAPES_TYPES.get(name))
          for name, param in inspect.signature(ensure_shapes_dataset).parameters.items()},
)
SUBCOMMANDS = {"preview": PREVIEW, "shapes": SHAPES}
USAGE = "usage: yolojax data preview|shapes [key=value ...]   (yolojax data preview --help: the keys)"


def preview(opts) -> str:
    """Write the grid of one batch; returns the file written."""
    opts = dict(opts)
    split, seed, epoch = opts.pop("split"), opts.pop("seed"), opts.pop("epoch")
    out = opts.pop("out") or f"{split}_batch0.jpg"
    dataset = build_dataset({**opts, "workers": 0}, split, seed)
    batch = next(dataset.iterator(epoch, workers=0))
    grid = draw_batch_grid(batch, dataset.names)
    if not cv2.imwrite(out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{out}: could not write the preview image")
    return out


def _preview(parsed: args.Parsed) -> int:
    try:
        print(f"wrote {preview(parsed.opts)}")
    except NoLabelsError as err:
        return args.fail("data preview", err)
    return 0


def _shapes(parsed: args.Parsed) -> int:
    opts = dict(parsed.opts)
    print(ensure_shapes_dataset(opts.pop("root"), **opts))
    return 0


def cli_main(argv: list[str]) -> int:
    if not argv or argv[0] in args.HELP_TOKENS:
        print("\n\n".join([USAGE, *(args.help_text(c) for c in SUBCOMMANDS.values())]))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        return args.fail("data", ConfigError(f"unknown command {name!r}{suggestion(name, SUBCOMMANDS)} "
                                             "(preview or shapes)"))
    return args.run(SUBCOMMANDS[name], rest, _preview if name == "preview" else _shapes)
