"""What a training run's last validation leaves: the per-class table (returned, the loop prints it), and with cfg
`plots` the curves and confusion matrices of `yolojax.eval.plots` and the first val batch's labels and
predictions. `validate_best` is the train loop's `final_validation` (injected by `yolojax train`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from yolojax.eval import confusion, val
from yolojax.eval.plots import plot_val_batch
from yolojax.eval.report import format_table


def first_batch(batches: Any) -> dict | None:
    """The first batch of an iterable of val batches (an iterator is closed after it), or None when it is empty."""
    iterator = iter(batches)
    try:
        return next(iterator, None)
    finally:
        if callable(getattr(iterator, "close", None)):
            iterator.close()


def plot_first_val_batch(task: Any, variables: dict, batch: dict, names: Any, save_dir: Path, *, conf: float,
                         iou: float, max_det: int) -> list[Path]:
    """val_batch0_labels.jpg / val_batch0_pred.jpg of `batch`, predicted by the val step `evaluate` compiled with the
    same settings (no second compilation)."""
    arrays, _ = val.val_inputs(batch)
    nc = int(task.num_classes)
    step = val.jitted_step(task, float(conf), float(iou), int(max_det), nc, confusion.matrix_conf(conf))
    return plot_val_batch(arrays, jax.device_get(step(variables, arrays)), names, save_dir)


def validate_best(task: Any, variables: dict, data: Any, cfg: Any, save_dir: Path) -> str:
    """Validate `variables` on the run's val split with the run's settings; write the plots there when cfg.plots.

    Returns the per-class table (`yolojax.eval.report.format_table`).
    """
    conf = cfg.conf if cfg.conf is not None else 0.001
    names = list(data.names)
    result = val.evaluate(task, variables, data.val_batches(), conf=conf, iou=cfg.iou, max_det=cfg.max_det,
                          names=names, save_dir=save_dir, plots=bool(cfg.plots))
    batch = first_batch(data.val_batches()) if cfg.plots else None
    if batch is not None:
        plot_first_val_batch(task, variables, batch, names, Path(save_dir), conf=conf, iou=cfg.iou,
                             max_det=cfg.max_det)
    return format_table(result)
