"""yolojax.eval: metrics (COCO / reference mAP), validation, COCO JSON scoring, predict, plots.

`coco_eval(gt_json, dt_json) -> dict` scores COCO JSON files; `evaluate(task, variables, dataset, ...) -> dict`
validates a task's weights on a dataset.
"""
from yolojax.eval.coco import coco_eval
from yolojax.eval.val import evaluate

__all__ = ["coco_eval", "evaluate"]
