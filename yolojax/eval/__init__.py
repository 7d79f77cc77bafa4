"""yolojax.eval: metrics (COCO / reference mAP), validation, COCO JSON scoring.

`coco_eval(gt_json, dt_json) -> dict` and `evaluate(task, variables, dataset, ...) -> dict` are imported lazily,
so that importing a sibling module (postprocess, predict) does not pull in the evaluation code.
"""
from __future__ import annotations

__all__ = ["coco_eval", "evaluate"]


def __getattr__(name):
    if name == "coco_eval":
        from yolojax.eval.coco import coco_eval
        return coco_eval
    if name == "evaluate":
        from yolojax.eval.val import evaluate
        return evaluate
    raise AttributeError(f"module 'yolojax.eval' has no attribute {name!r}")
