"""The task protocol: what the train loop, val and predict need from a model family.

A task is a frozen dataclass per model family:
  name: str; loss_names: tuple[str, ...]                   e.g. ("box", "cls", "dfl")
  num_classes: int
  spec() -> dict                                          the model config that `build_task` turns back into
                                                          this task ({"family": ..., ...}; saved with weights)
  init(key, image_hw) -> variables                        {"params": ..., "batch_stats": ... (may be empty)}
  loss_fn(params, model_state, batch, key) -> (loss, aux)
      batch: images uint8 (b, h, w, 3), bboxes (b, m, 4) normalized xywh, cls (b, m) int32, mask (b, m) bool;
      model_state: the non-param collections ({"batch_stats": ...});
      loss: () float32, the reference's form sum(items) * b (summed, not averaged, over the batch);
      aux: {"items": (len(loss_names),) float32, "model_state": updated non-param collections}
  inference_variables(variables) -> what predict takes fastest (e.g. BatchNorm folded), prepared once; optional
                                   (`inference_variables(task, variables)` falls back to the variables as they are)
  predict(variables or inference_variables(variables), images uint8 (b, h, w, 3), *, conf=0.001, iou=0.7,
          max_det=300) -> dict
      boxes (b, max_det, 4) xyxy pixels of the input images, scores (b, max_det), classes (b, max_det) int32,
      valid (b, max_det) bool                           jit-able, fixed shapes
      (multi_label=True: a box may appear once per class above conf — the reference's validation setting)
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import jax


class DetectionTask(Protocol):
    """See the module docstring."""

    @property
    def name(self) -> str: ...

    @property
    def loss_names(self) -> tuple[str, ...]: ...

    @property
    def num_classes(self) -> int: ...

    def spec(self) -> dict: ...

    def init(self, key: jax.Array, image_hw: tuple[int, int]) -> dict: ...

    def loss_fn(self, params: Any, model_state: dict, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]: ...

    def predict(self, variables: Any, images: jax.Array, *, conf: float = 0.001, iou: float = 0.7,
                max_det: int = 300, multi_label: bool = False, classes: Sequence[int] | None = None,
                agnostic: bool = False) -> dict: ...


def inference_variables(task: DetectionTask, variables: dict) -> Any:
    """`task.inference_variables(variables)` where the task defines it, else `variables` unchanged."""
    prepare = getattr(task, "inference_variables", None)
    return variables if prepare is None else prepare(variables)
