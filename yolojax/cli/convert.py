"""`yolojax convert SRC DST`: reference YOLOv8 weights -> yolojax weights (`yolojax.convert.files.convert_file`)."""
from __future__ import annotations

from yolojax.cli import args
from yolojax.convert.files import convert_file
from yolojax.convert.sources import WeightsFileError
from yolojax.models.yolov8 import SCALES

COMMAND = args.Command(
    name="convert",
    summary="Import reference YOLOv8 weights (state_dict .pt/.pth, .safetensors, or an ultralytics checkpoint with "
            "--trust-pickle) into the yolojax weights format (folder DST). scale and nc default to what the weights "
            "show; given, they are checked against the file. .safetensors needs only the safetensors package; "
            ".pt/.pth files need torch (pip install 'yolojax[parity]').",
    keys={
        "scale": args.own_key(None, "(str) model scale", types=(str,), choices=tuple(SCALES)),
        "nc": args.own_key(None, "(int) number of classes", types=(int,)),
        "names": args.own_key(None, "(str) class names, comma-separated (default: the checkpoint's, else 0, 1, ...)",
                              types=(str,)),
        "imgsz": args.config_key("imgsz", help="(int) training image size recorded with the weights (the default "
                                               "of val / predict imgsz)"),
        "trust_pickle": args.own_key(False, "(bool) allow unpickling an ultralytics checkpoint (runs code from the "
                                            "file: only for files you trust)"),
    },
    positional=("SRC", "DST"),
)


def _main(parsed: args.Parsed) -> int:
    (src, dst), opts = parsed.positional, parsed.opts
    names = opts.names.split(",") if opts.names else None
    try:
        meta = convert_file(src, dst, scale=opts.scale, num_classes=opts.nc, names=names, imgsz=opts.imgsz,
                            trust_pickle=opts.trust_pickle)
    except WeightsFileError as err:  # not weights, a missing package, or weights that do not fit: one line, exit 2
        return args.fail(COMMAND.name, str(err).removeprefix("convert: "))
    print(f"wrote {dst}: YOLOv8{meta['scale']} nc={meta['num_classes']}")
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
