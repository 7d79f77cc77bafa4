"""The task protocol one train loop / val / predict use for every model family, YOLOv8's task, and a registry.

A task is a frozen dataclass per model family:
  name: str; loss_names: tuple[str, ...]                   e.g. ("box", "cls", "dfl")
  init(key, image_hw) -> variables                        {"params": ..., "batch_stats": ... (may be empty)}
  loss_fn(params, model_state, batch, key) -> (loss, aux)
      batch: images uint8 (b, h, w, 3), bboxes (b, m, 4) normalized xywh, cls (b, m) int32, mask (b, m) bool;
      model_state: the non-param collections ({"batch_stats": ...});
      loss: () float32, the reference's form sum(items) * b (summed, not averaged, over the batch);
      aux: {"items": (len(loss_names),) float32, "model_state": updated non-param collections}
  predict(variables, images uint8 (b, h, w, 3), *, conf=0.001, iou=0.7, max_det=300) -> dict
      boxes (b, max_det, 4) xyxy pixels of the input images, scores (b, max_det), classes (b, max_det) int32,
      valid (b, max_det) bool                           jit-able, fixed shapes
      (multi_label=True: a box may appear once per class above conf — the reference's validation setting)
`build_task(model_spec, num_classes, ...)` picks the family from the model config's `family` key.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp


class DetectionTask(Protocol):
    name: str
    loss_names: tuple[str, ...]

    def init(self, key: jax.Array, image_hw: tuple[int, int]) -> dict: ...

    def loss_fn(self, params: Any, model_state: dict, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]: ...

    def predict(self, variables: dict, images: jax.Array, *, conf: float = 0.001, iou: float = 0.7,
                max_det: int = 300, multi_label: bool = False) -> dict: ...


@dataclasses.dataclass(frozen=True)
class YOLOv8Task:
    """YOLOv8 detector: yolojax.models.yolov8 + yolojax.losses.detection_loss + non_max_suppression.

    dtype: compute dtype of the network (bfloat16 on GPU/TPU; params stay float32). box/cls/dfl: loss gains.
    """

    scale: str = "n"
    num_classes: int = 80
    dtype: Any = jnp.float32
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    name: str = "yolov8"
    loss_names: tuple[str, ...] = ("box", "cls", "dfl")

    @property
    def model(self):
        from yolojax.models.yolov8 import YOLOv8
        return YOLOv8(scale=self.scale, num_classes=self.num_classes, dtype=self.dtype)

    def init(self, key: jax.Array, image_hw: tuple[int, int]) -> dict:
        from yolojax.models.yolov8 import init_variables
        return dict(init_variables(self.model, key, tuple(image_hw)))

    def loss_fn(self, params, model_state, batch, key):
        del key  # the YOLOv8 loss is deterministic
        from yolojax.losses import detection_loss
        images = batch["images"].astype(self.dtype) / 255.0
        feats, updated = self.model.apply({"params": params, **model_state}, images, train=True,
                                          mutable=["batch_stats"])
        targets = {"cls": batch["cls"], "bboxes": batch["bboxes"], "mask": batch["mask"]}
        loss, items = detection_loss(feats, targets, num_classes=self.num_classes, box=self.box, cls=self.cls,
                                     dfl=self.dfl)
        return loss, {"items": items, "model_state": dict(updated)}

    def predict(self, variables, images, *, conf=0.001, iou=0.7, max_det=300, multi_label=False):
        """multi_label: one row per (box, class) above conf, as the reference's validator does."""
        from yolojax.eval.postprocess import non_max_suppression
        boxes_xywh, class_probs = self.model.apply(variables, images.astype(self.dtype) / 255.0, train=False)
        return non_max_suppression(boxes_xywh, class_probs, conf_thres=conf, iou_thres=iou, max_det=max_det,
                                   multi_label=multi_label)


def _yolov8(spec: dict, num_classes: int, dtype: Any, hyp: dict) -> YOLOv8Task:
    return YOLOv8Task(scale=spec.get("scale", "n"), num_classes=num_classes, dtype=dtype,
                      **{k: hyp[k] for k in ("box", "cls", "dfl") if k in hyp})


def _faster_rcnn(spec: dict, num_classes: int, dtype: Any, hyp: dict):
    module = importlib.import_module("yolojax.models.two_stage")  # lazy: only when this family is asked for
    kwargs = {k: v for k, v in spec.items() if k != "family"}
    return module.FasterRCNNTask(num_classes=num_classes, dtype=dtype, **kwargs)


TASK_BUILDERS: dict[str, Callable[..., Any]] = {"yolov8": _yolov8, "faster_rcnn": _faster_rcnn}


def build_task(model_spec: dict, num_classes: int, *, dtype: Any = jnp.float32, hyp: dict | None = None):
    """Task for a model config ({"family": "yolov8", "scale": "n"} ...), its classes, compute dtype, loss gains."""
    family = model_spec.get("family")
    if family not in TASK_BUILDERS:
        close = difflib.get_close_matches(str(family), TASK_BUILDERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"model family {family!r} unknown{hint} (known: {', '.join(TASK_BUILDERS)})")
    return TASK_BUILDERS[family](model_spec, num_classes, dtype, hyp or {})


def task_from_weights_meta(meta: dict, *, dtype: Any = jnp.float32):
    """The task exported weights belong to, from their meta.json (`model_config`, else `model` + `scale`)."""
    spec = meta.get("model_config") or {"family": meta.get("model", "yolov8"), "scale": meta.get("scale", "n")}
    return build_task(dict(spec), int(meta["num_classes"]), dtype=dtype)
