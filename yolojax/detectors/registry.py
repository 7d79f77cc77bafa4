"""Model family name -> task: `build_task` turns a model config ({"family": ..., ...}) into its task."""
from __future__ import annotations

import difflib
from typing import Any, Callable

import jax.numpy as jnp

from yolojax.detectors.faster_rcnn import FasterRCNNTask
from yolojax.detectors.protocol import DetectionTask
from yolojax.detectors.yolov8 import YOLOv8Task


def _yolov8(spec: dict, num_classes: int, dtype: Any, hyp: dict) -> YOLOv8Task:
    return YOLOv8Task(scale=spec.get("scale", "n"), num_classes=num_classes, dtype=dtype,
                      **{k: hyp[k] for k in ("box", "cls", "dfl") if k in hyp})


def _faster_rcnn(spec: dict, num_classes: int, dtype: Any, hyp: dict) -> FasterRCNNTask:
    kwargs = {k: v for k, v in spec.items() if k != "family"}
    return FasterRCNNTask(num_classes=num_classes, dtype=dtype, **kwargs)


TASK_BUILDERS: dict[str, Callable[..., DetectionTask]] = {"yolov8": _yolov8, "faster_rcnn": _faster_rcnn}


def build_task(model_spec: dict, num_classes: int, *, dtype: Any = jnp.float32,
               hyp: dict | None = None) -> DetectionTask:
    """Task for a model config ({"family": "yolov8", "scale": "n"} ...), its classes, compute dtype, loss gains."""
    family = model_spec.get("family")
    if family not in TASK_BUILDERS:
        close = difflib.get_close_matches(str(family), TASK_BUILDERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"model family {family!r} unknown{hint} (known: {', '.join(TASK_BUILDERS)})")
    return TASK_BUILDERS[family](model_spec, num_classes, dtype, hyp or {})


def task_from_weights_meta(meta: dict, *, dtype: Any = jnp.float32) -> DetectionTask:
    """The task exported weights belong to, from their meta.json (`model_config`, else `model` + `scale`)."""
    spec = meta.get("model_config") or {"family": meta.get("model", "yolov8"), "scale": meta.get("scale", "n")}
    return build_task(dict(spec), int(meta["num_classes"]), dtype=dtype)
