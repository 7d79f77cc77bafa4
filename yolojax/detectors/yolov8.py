"""YOLOv8 as a task (`yolojax.detectors.protocol.DetectionTask`): the model, the loss and the postprocess."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from yolojax.detectors.postprocess import non_max_suppression
from yolojax.losses import detection_loss
from yolojax.models.inference import apply_folded, fold_batchnorm
from yolojax.models.yolov8 import YOLOv8, init_variables

# one program, not a dispatch per operation of each of YOLOv8's 57 folds (validation folds the EMA every epoch)
_fold_on_device = jax.jit(fold_batchnorm, static_argnames=("kernel_dtype", "ohwi", "pack"))


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

    def spec(self) -> dict:
        return {"family": self.name, "scale": self.scale}

    @property
    def model(self) -> YOLOv8:
        return YOLOv8(scale=self.scale, num_classes=self.num_classes, dtype=self.dtype)

    def init(self, key: jax.Array, image_hw: tuple[int, int]) -> dict:
        return dict(init_variables(self.model, key, (int(image_hw[0]), int(image_hw[1]))))

    def loss_fn(self, params, model_state, batch, key):
        del key  # the YOLOv8 loss is deterministic
        images = batch["images"].astype(self.dtype) / 255.0
        feats, updated = self.model.apply({"params": params, **model_state}, images, train=True,
                                          mutable=["batch_stats"])
        targets = {"cls": batch["cls"], "bboxes": batch["bboxes"], "mask": batch["mask"]}
        loss, items = detection_loss(feats, targets, num_classes=self.num_classes, box=self.box, cls=self.cls,
                                     dfl=self.dfl)
        return loss, {"items": items, "model_state": dict(updated)}

    def inference_variables(self, variables):
        """`variables` for `predict`, BatchNorm folded into the convolutions once (kernels in the compute dtype and
        cuDNN's layout) and packed into one buffer per dtype: the same detections up to rounding, from a program
        with fewer kernels and two weight arguments."""
        return _fold_on_device(variables, kernel_dtype=self.dtype, ohwi=True, pack=True)

    def predict(self, variables, images, *, conf=0.001, iou=0.7, max_det=300, multi_label=False, classes=None,
                agnostic=False):
        """variables: the task's variables or their `inference_variables`. multi_label: one row per (box, class)
        above conf, as the reference's validator does; classes: keep only these class ids (before NMS); agnostic:
        boxes of different classes suppress each other."""
        boxes_xywh, class_probs = apply_folded(self.model, variables, images.astype(self.dtype) / 255.0, train=False)
        return non_max_suppression(boxes_xywh, class_probs, conf_thres=conf, iou_thres=iou, max_det=max_det,
                                   multi_label=multi_label, classes=classes, agnostic=agnostic)
