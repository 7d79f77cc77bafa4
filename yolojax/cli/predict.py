"""`yolojax predict SOURCE weights=PATH`: detections drawn and written for images, folders, globs, lists and videos
(`yolojax.eval.predict.stream_predict`) into a fresh run folder (runs/predict, runs/predict2, ...)."""
from __future__ import annotations

from pathlib import Path

from yolojax.cli import args
from yolojax.cli.weights import TRAIN_KEYS, WEIGHTS_ALIASES
from yolojax.data.media import list_media
from yolojax.eval.predict import PredictInputError, load_jax_detector, predict_options, stream_predict
from yolojax.eval.predict_output import PredictionWriter
from yolojax.export import load_onnx_detector
from yolojax.train.config import ConfigError
from yolojax.train.records import new_run_dir
from yolojax.xla_flags import enable_compilation_cache

COMMAND = args.Command(
    name="predict",
    summary="Detect objects in SOURCE: an image or video file, a folder, a glob pattern ('imgs/*.jpg') or a .txt "
            "list of those. Writes into a new folder project/name (numbered if it exists): each image (or an .avi "
            "per video) with its boxes drawn and predictions.json (save), labels/<stem>.txt in YOLO format "
            "(save_txt; <stem>_<frame>.txt for video frames). Unreadable files are skipped with a warning. All "
            "images of a source are letterboxed to one input shape, so a folder of mixed sizes compiles once.",
    keys={
        "weights": args.config_key("weights", help="(str) yolojax weights folder, an .onnx export (run by ONNX "
                                                   "Runtime), or reference weights (.pt / .safetensors) imported on "
                                                   "the fly (required)"),
        "conf": args.config_key("conf", 0.25, "(float) confidence threshold (the reference's predict default)"),
        "iou": args.config_key("iou"),
        "imgsz": args.config_key("imgsz", None, "(int) letterbox size, a multiple of 32; null: the size the weights "
                                                "were trained at (640 if unknown)"),
        "batch": args.config_key("batch", 1, "(int) images per model call (the last batch is padded)"),
        "max_det": args.config_key("max_det"),
        "classes": args.own_key(None, "(int | list[int]) keep only these class ids, e.g. classes=0 or "
                                      "classes=[0,2]; null: all", types=(int, list)),
        "agnostic_nms": args.own_key(False, "(bool) NMS across classes"),
        "rect": args.own_key(True, "(bool) pad only to the next multiple of 32 (as the reference does for one "
                                   "image) when every image of the source gives the same shape; otherwise, and "
                                   "with false, a square imgsz letterbox"),
        "vid_stride": args.own_key(1, "(int) use every n-th video frame"),
        "save": args.own_key(True, "(bool) save the drawn images / videos and predictions.json"),
        "save_txt": args.own_key(False, "(bool) save labels/<stem>.txt: `class cx cy w h`, normalized"),
        "save_conf": args.own_key(False, "(bool) with save_txt, add each detection's confidence to its line"),
        "line_width": args.own_key(None, "(int) box line width in pixels; null: scaled to the image", types=(int,)),
        "project": args.config_key("project"),
        "name": args.config_key("name", "predict"),
        "exist_ok": args.config_key("exist_ok", help="(bool) write into project/name even if it exists"),
        "save_dir": args.own_key(None, "(str) output folder instead of project/name (numbered likewise)",
                                 types=(str,)),
        "trust_pickle": TRAIN_KEYS["trust_pickle"],
    },
    positional=("SOURCE",),
    aliases=WEIGHTS_ALIASES,
)


def load_detector(weights: str, trust_pickle: bool):
    """The `yolojax.eval.predict.Detector` of weights: an .onnx export, or JAX weights (`load_jax_detector`)."""
    if str(weights).lower().endswith(".onnx"):
        return load_onnx_detector(weights)
    return load_jax_detector(weights, trust_pickle=trust_pickle)


def _main(parsed: args.Parsed) -> int:
    opts = parsed.opts
    if not opts.weights:
        raise ConfigError("command line: weights=PATH is required (yolojax predict --help)")
    try:
        media = list_media(parsed.positional[0])
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    enable_compilation_cache()  # before the first compilation
    try:
        detector = load_detector(opts.weights, opts.trust_pickle)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise ConfigError(f"weights={opts.weights}: {err}") from None
    try:
        options = predict_options(detector, conf=opts.conf, iou=opts.iou, imgsz=opts.imgsz, max_det=opts.max_det,
                                  classes=opts.classes, agnostic_nms=opts.agnostic_nms, batch=opts.batch,
                                  rect=opts.rect, vid_stride=opts.vid_stride)
    except PredictInputError as err:
        raise ConfigError(f"command line: {err}") from None
    save_dir = Path(opts.save_dir) if opts.save_dir else Path(opts.project) / opts.name
    writer = None
    if opts.save or opts.save_txt:  # the folder is made only once everything above checked out
        save_dir = new_run_dir(save_dir.parent, save_dir.name, opts.exist_ok)
        writer = PredictionWriter(save_dir, save=opts.save, save_txt=opts.save_txt, save_conf=opts.save_conf,
                                  line_width=opts.line_width)
    count = sum(1 for _ in stream_predict(media, detector, options, writer, log=print))
    if writer is not None:
        labels = len(list(save_dir.glob("labels/*.txt")))
        saved = f"; {labels} label file{'s' * (labels != 1)} in {save_dir / 'labels'}" if opts.save_txt else ""
        print(f"{count} images / frames; results saved to {save_dir}{saved}")
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
