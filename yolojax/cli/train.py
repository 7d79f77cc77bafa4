"""`yolojax train [key=value ...]`: the training run of `yolojax.train.loop`, validated by `yolojax.eval`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import jax

from yolojax.eval.val import evaluate_ema
from yolojax.train.config import ConfigError, load_config
from yolojax.train.loop import NonFiniteLossError, train
from yolojax.xla_flags import apply_default_xla_flags

HELP = """usage: yolojax train [key=value ...]

Trains a detector. With no arguments: YOLOv8n on the embedded shapes dataset with the CPU recipe `shapes`
(yolojax/configs/shapes.yaml). Keys and defaults: yolojax/configs/default.yaml (e.g. model=yolov8s data=coco
epochs=100 batch=64 imgsz=640 cfg=none).
resume=True continues the latest run (resume=runs/train3 a given one). Ctrl-C saves a checkpoint and exits."""


def enable_compilation_cache() -> None:
    """Keep compiled steps on disk ($YOLOJAX_CACHE/jax or ~/.cache/yolojax/jax) so repeated runs start at once."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return
    root = Path(os.environ.get("YOLOJAX_CACHE", Path.home() / ".cache" / "yolojax"))
    jax.config.update("jax_compilation_cache_dir", str(root / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def cli_main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    try:
        cfg = load_config(argv)
    except ConfigError as err:
        print(f"yolojax train: {err}", file=sys.stderr)
        return 2
    apply_default_xla_flags(job="train", deterministic=bool(cfg.deterministic))  # before the first JAX computation
    enable_compilation_cache()
    try:
        result = train(cfg, evaluate=evaluate_ema)
    except NonFiniteLossError as err:
        print(f"yolojax train: {err}", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0
