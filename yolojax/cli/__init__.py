"""`yolojax train|val|predict|convert|bench|data ...` — a thin dispatcher.

Each sub-command is a module of this package with `cli_main(argv: list[str]) -> int`, its options parsed by
`yolojax.cli.args` (one set of rules for all); this file only routes, so that importing the CLI stays cheap and no
sub-command imports another's dependencies.
"""
from __future__ import annotations

import importlib
import sys

from yolojax.xla_flags import apply_default_xla_flags

COMMANDS = {
    "train": ("yolojax.cli.train", "Train a detector (default: YOLOv8n on the embedded shapes dataset)."),
    "val": ("yolojax.cli.val", "Validate weights on a dataset, or score COCO JSON files (--coco-json GT DT)."),
    "predict": ("yolojax.cli.predict", "Detect objects in an image file or folder and draw them."),
    "convert": ("yolojax.cli.convert", "Import reference (PyTorch/ultralytics) weights into an orbax checkpoint."),
    "bench": ("yolojax.cli.bench", "Time the training step (and the reference's) on this machine."),
    "data": ("yolojax.cli.data", "Preview augmented batches (data preview) or generate the shapes dataset."),
}


# Which XLA flag set each command runs with (yolojax.xla_flags): training jobs never get CUDA-graph flags.
JOB_OF_COMMAND = {"train": "train", "bench": "train", "val": "infer", "predict": "infer", "convert": "infer",
                  "data": "infer"}


def usage() -> str:
    lines = ["usage: yolojax COMMAND [key=value ...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `yolojax COMMAND --help` for a command's keys and their defaults."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"yolojax: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2

    apply_default_xla_flags(job=JOB_OF_COMMAND[name])  # before any sub-command imports JAX
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli_main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
