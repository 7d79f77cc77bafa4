"""`yolojax train|val|predict|convert|bench|data ...` — a thin dispatcher.

Each sub-command is a module of this package with `cli_main(argv: list[str]) -> int`, its options parsed by
`yolojax.cli.args` (one set of rules for all); this file only routes, so that importing the CLI stays cheap and no
sub-command imports another's dependencies.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys

from yolojax.xla_flags import apply_default_xla_flags

COMMANDS = {
    "train": ("yolojax.cli.train", "Train a detector (default: YOLOv8n on the embedded shapes dataset)."),
    "val": ("yolojax.cli.val", "Validate weights on a dataset, or score COCO JSON files (--coco-json GT DT)."),
    "predict": ("yolojax.cli.predict", "Detect objects in images, folders, globs, lists or videos."),
    "convert": ("yolojax.cli.convert", "Import reference (PyTorch/ultralytics) weights into an orbax checkpoint."),
    "bench": ("yolojax.cli.bench", "Time the training step (and the reference's) on this machine."),
    "autotune": ("yolojax.cli.autotune", "Time the train step's convolution algorithms once on this machine's GPU."),
    "data": ("yolojax.cli.data", "Preview augmented batches (data preview) or generate the shapes dataset."),
    "export": ("yolojax.cli.export", "Export weights as ONNX or StableHLO for inference elsewhere."),
}


# Which XLA flag set each command runs with (yolojax.xla_flags): training jobs never get CUDA-graph flags.
JOB_OF_COMMAND = {"train": "train", "bench": "train", "autotune": "autotune", "val": "infer", "predict": "infer",
                  "convert": "infer", "data": "infer", "export": "infer"}


def usage() -> str:
    lines = ["usage: yolojax COMMAND [key=value ...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `yolojax COMMAND --help` for a command's keys and their defaults; `yolojax --version` (-V) "
              "for the version."]
    return "\n".join(lines)


def version() -> str:
    """`yolojax 0.1.0 (jax 0.10.2, flax 0.12.0)`: the installed distributions' versions."""
    def of(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return f"yolojax {of('yolojax')} (jax {of('jax')}, flax {of('flax')})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        print(version())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"yolojax: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2

    apply_default_xla_flags(job=JOB_OF_COMMAND[name])  # before any sub-command imports JAX
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.cli_main(rest) or 0)
    except KeyboardInterrupt:
        print(f"yolojax {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_user_mistake(err):
            raise  # a bug: its traceback
        print(f"yolojax {name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2


# The error types that mean a user's mistake (a key, value, path or file), by module: each one's message is a line
# naming what is wrong and what is allowed. Looked up among the loaded modules only (an error of a module that was
# never imported cannot have been raised), so that the dispatcher imports none of them.
USER_ERRORS = {"yolojax.train.config": "ConfigError", "yolojax.data.sources": "DataError",
               "yolojax.convert.sources": "WeightsFileError"}


def is_user_mistake(err: BaseException) -> bool:
    """Whether `err` is one of USER_ERRORS (then the CLI prints its line and exits 2, without a traceback)."""
    kinds = [getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules]
    return isinstance(err, tuple(kinds))


if __name__ == "__main__":
    sys.exit(main())
