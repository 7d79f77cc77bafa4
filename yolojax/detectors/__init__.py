"""Detectors as tasks: each model family bundles its model, loss and postprocess behind one protocol
(`DetectionTask`), which the train loop, val and predict use; `build_task` picks a family from a model config."""
from yolojax.detectors.faster_rcnn import FasterRCNNTask
from yolojax.detectors.protocol import DetectionTask, inference_variables
from yolojax.detectors.registry import TASK_BUILDERS, build_task, task_from_weights_meta
from yolojax.detectors.yolov8 import YOLOv8Task

__all__ = ["DetectionTask", "FasterRCNNTask", "TASK_BUILDERS", "YOLOv8Task", "build_task", "inference_variables",
           "task_from_weights_meta"]
