"""`yolojax val`: mAP of saved weights on a dataset (`yolojax.eval.evaluate`), or a COCO results file scored
against COCO ground truth (`yolojax.eval.coco_eval`)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from yolojax.cache import cache_root
from yolojax.cli import args
from yolojax.cli.weights import TRAIN_KEYS, WEIGHTS_ALIASES
from yolojax.convert.cache import weights_folder
from yolojax.convert.files import read_weights
from yolojax.data import build_dataset
from yolojax.detectors import task_from_weights_meta
from yolojax.eval import coco
from yolojax.eval.val import MODES, evaluate
from yolojax.train.config import ConfigError

COMMAND = args.Command(
    name="val",
    summary="Validate weights on a dataset (mAP, both matching rules computed, `mode` picks the headline), or score "
            "a COCO results file against COCO ground truth.",
    keys={
        "weights": args.config_key("weights", help="(str) yolojax weights folder to validate, or reference weights "
                                                   "(.pt / .pth / .safetensors, imported once into the cache) "
                                                   "(required)"),
        "trust_pickle": TRAIN_KEYS["trust_pickle"],
        "data": args.config_key("data", help=args.DATA_HELP),
        "split": args.own_key("val", "(str) split of the data yaml to validate on"),
        "imgsz": args.config_key("imgsz", None, "(int) image size; null or 0: the size the weights were trained at "
                                                "(640 if unknown)"),
        "rect": args.own_key(False, "(bool) the reference's rectangular batches; false: square letterbox, as the "
                                    "in-training validation, so both give the same numbers"),
        "batch": args.config_key("batch", 32),
        "workers": args.config_key("workers"),
        "conf": args.config_key("conf", 0.001, "(float) confidence threshold (the reference's val default)"),
        "iou": args.config_key("iou"),
        "max_det": args.config_key("max_det"),
        "mode": args.own_key("coco", "(str) headline numbers: pycocotools' rules or the reference's ap_per_class",
                             choices=MODES),
        "save_dir": args.own_key("runs/val", "(str) folder for plots and predictions.json"),
        "plots": args.config_key("plots", help="(bool) save PR / F1 / P / R curves and confusion matrices"),
        "save_json": args.own_key(False, "(bool) save predictions.json (COCO results, original-image pixels)"),
        "anno_json": args.own_key(None, "(str) COCO instances file: also score predictions.json against it with "
                                        "pycocotools' rules (crowd regions, mask areas)", types=(str,)),
        "coco_json": args.own_key(None, "(str) COCO instances file (GT) to score the results file DT.json against; "
                                        "nothing else is run", types=(str,)),
    },
    optional=("DT.json",),
    usage=("yolojax val weights=PATH [data=DATA.yaml] [key=value ...]", "yolojax val --coco-json GT.json DT.json"),
    aliases=WEIGHTS_ALIASES,
)

COCO_LABELS = dict(map50_95="AP @[.50:.95]", map50="AP @.50", map75="AP @.75", map_small="AP small",
                   map_medium="AP medium", map_large="AP large", ar1="AR maxDets=1", ar10="AR maxDets=10",
                   ar100="AR maxDets=100", ar_small="AR small", ar_medium="AR medium", ar_large="AR large")


def print_coco(stats: dict) -> None:
    for key, label in COCO_LABELS.items():
        print(f"{label:<16} {stats[key]:.4f}")


STRIDE = 32  # the largest stride of the models: image sides must be multiples of it


def check_values(opts) -> None:
    """ConfigError naming the key of a value out of its range (the parser has checked the types)."""
    checks = [("batch", opts.batch >= 1, "must be >= 1"), ("workers", opts.workers >= 0, "must be >= 0"),
              ("imgsz", opts.imgsz is None or opts.imgsz >= 0, "must be a positive multiple of 32, or 0 / null for "
                                                               "the size the weights were trained at"),
              ("conf", opts.conf is not None and 0 <= opts.conf <= 1, "must be in [0, 1]"),
              ("iou", opts.iou is not None and 0 <= opts.iou <= 1, "must be in [0, 1]"),
              ("max_det", opts.max_det >= 1, "must be >= 1")]
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"command line: {key}={args.show(opts[key])} {allowed}")


def stride_multiple(imgsz: int) -> int:
    """`imgsz` rounded up to a multiple of STRIDE, with a warning when that changes it (as the reference does)."""
    rounded = max(STRIDE, math.ceil(imgsz / STRIDE) * STRIDE)
    if rounded != imgsz:
        print(f"yolojax val: warning: imgsz={imgsz} must be a multiple of {STRIDE}; using imgsz={rounded}",
              file=sys.stderr)
    return rounded


def validate(opts) -> dict:
    """Load the weights, build the dataset, print the table (and the pycocotools numbers with anno_json); returns
    `yolojax.eval.val.evaluate`'s result."""
    check_values(opts)
    variables, meta = read_weights(weights_folder(opts.weights, cache_root() / "imported",
                                                  trust_pickle=opts.trust_pickle))
    task = task_from_weights_meta(meta)
    imgsz = stride_multiple(opts.imgsz or int(meta.get("imgsz") or 640))
    cfg = dict(data=opts.data, imgsz=imgsz, batch=opts.batch, workers=opts.workers, rect=opts.rect)
    dataset = build_dataset(cfg, opts.split, 0)
    names = list(getattr(dataset, "names", None) or meta.get("names") or [])
    if names and len(names) != task.num_classes:
        raise ConfigError(f"data={opts.data} has {len(names)} classes, weights={opts.weights} {task.num_classes}")
    class_to_category = None
    if opts.anno_json:  # class i -> the i-th category id of the annotations, as for COCO's 80 of 91 ids
        class_to_category = [int(c) for c in coco.load_coco_gt(opts.anno_json)["category_ids"]]
        if len(class_to_category) != task.num_classes:
            raise ConfigError(f"anno_json={opts.anno_json} has {len(class_to_category)} categories, the model "
                              f"{task.num_classes} classes")
    result = evaluate(task, variables, dataset, conf=opts.conf, iou=opts.iou, max_det=opts.max_det, mode=opts.mode,
                      names=names or None, save_dir=opts.save_dir, plots=opts.plots,
                      save_json=opts.save_json or bool(opts.anno_json), class_to_category=class_to_category, log=print)
    if opts.anno_json:
        print(f"pycocotools rules on {opts.anno_json} (crowd regions and mask areas included):")
        print_coco(coco.coco_eval(opts.anno_json, Path(opts.save_dir) / "predictions.json"))
    return result


def _main(parsed: args.Parsed) -> int:
    opts = parsed.opts
    if opts.coco_json:
        if len(parsed.positional) != 1:
            raise ConfigError("command line: coco_json=GT.json needs the results file DT.json after it")
        print_coco(coco.coco_eval(opts.coco_json, parsed.positional[0]))
        return 0
    if parsed.positional:
        raise ConfigError(f"command line: unexpected argument {parsed.positional[0]!r} (a results file goes with "
                          "--coco-json GT.json)")
    if not opts.weights:
        raise ConfigError("command line: weights=PATH is required (yolojax val --help)")
    validate(opts)
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
