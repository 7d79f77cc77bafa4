"""`yolojax predict SOURCE weights=PATH`: detections drawn and written for an image or a folder
(`yolojax.eval.predict.predict_folder`)."""
from __future__ import annotations

import sys

from yolojax.cli import args
from yolojax.eval.predict import predict_folder
from yolojax.train.config import ConfigError

COMMAND = args.Command(
    name="predict",
    summary="Detect objects in an image file or in every image of a folder. Writes under save_dir: each image with "
            "its boxes drawn, labels/<stem>.txt (`class cx cy w h conf`, normalized) and predictions.json. "
            "Unreadable images are skipped with a warning.",
    keys={
        "weights": args.config_key("weights", help="(str) yolojax weights folder, or reference weights (.pt / "
                                                   ".safetensors) imported on the fly (required)"),
        "conf": args.config_key("conf", 0.25, "(float) confidence threshold (the reference's predict default)"),
        "iou": args.config_key("iou"),
        "imgsz": args.config_key("imgsz", None, "(int) letterbox size, a multiple of 32; null: the size the weights "
                                                "were trained at (640 if unknown)"),
        "max_det": args.config_key("max_det"),
        "rect": args.own_key(True, "(bool) pad each image only to the next multiple of 32, as the reference does "
                                   "for a single image"),
        "save_dir": args.own_key("runs/predict", "(str) output folder"),
        "trust_pickle": args.own_key(False, "(bool) allow unpickling an ultralytics .pt checkpoint (runs code from "
                                            "the file: only for files you trust)"),
    },
    positional=("SOURCE",),
)


def _main(parsed: args.Parsed) -> int:
    opts = parsed.opts
    if not opts.weights:
        raise ConfigError("command line: weights=PATH is required (yolojax predict --help)")
    try:
        predict_folder(parsed.positional[0], **opts)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"yolojax predict: error: {err}", file=sys.stderr)
        return 1
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
