"""`yolojax export weights=PATH format=onnx|stablehlo`: weights -> an inference graph (`export_model`)."""
from __future__ import annotations

from yolojax.cli import args
from yolojax.cli.weights import WEIGHTS_ALIASES
from yolojax.export import FORMATS, ExportError, export_model
from yolojax.train.config import ConfigError

COMMAND = args.Command(
    name="export",
    summary="Export YOLOv8 weights as an ONNX file (through jax2onnx; the [export] extra) or as serialized StableHLO "
            "(jax.export, with a .json of metadata beside it). The graph takes uint8 RGB NHWC letterboxed images; "
            "class names, input size and conventions travel as metadata. `yolojax predict SOURCE "
            "weights=model.onnx` runs an ONNX export through ONNX Runtime. docs/export.md has the details.",
    keys={
        "weights": args.config_key("weights", help="(str) yolojax weights folder (or reference .pt / .safetensors "
                                                   "weights) to export (required)"),
        "format": args.own_key("onnx", "(str) output format", choices=tuple(FORMATS)),
        "imgsz": args.own_key(640, "(int | list[int]) input size, or [h, w]; multiples of 32 (the graph's spatial "
                                   "shape is fixed)", types=(int, list)),
        "batch": args.own_key(1, "(int | str) batch size of the graph, or 'dynamic'", types=(int, str)),
        "half": args.own_key(False, "(bool) compute in float16 (outputs stay float32)"),
        "nms": args.own_key(False, "(bool) NMS in the graph: inputs images, conf, iou; outputs max_det rows + valid "
                                   "mask. false: the graph ends at decoded boxes and class probabilities"),
        "max_det": args.config_key("max_det", help="(int) rows per image with nms=true"),
        "opset": args.own_key(None, "(int) ONNX opset (null: 17)", types=(int,)),
        "out": args.own_key(None, "(str) output file (null: beside the weights, e.g. best.onnx)", types=(str,)),
    },
    aliases=WEIGHTS_ALIASES,
)


def _main(parsed: args.Parsed) -> int:
    opts = parsed.opts
    if not opts.weights:
        raise ConfigError("command line: weights=PATH is required (yolojax export --help)")
    try:
        path = export_model(opts.weights, format=opts.format, imgsz=opts.imgsz, batch=opts.batch, half=opts.half,
                            nms=opts.nms, opset=opts.opset, out=opts.out, max_det=opts.max_det)
    except ExportError as err:
        raise ConfigError(str(err)) from None
    print(f"exported {path}")
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
