"""Validation: `evaluate(task, variables, dataset)`, used by `yolojax val` (yolojax/cli/val.py) and the training loop.

One jitted step per batch does everything on device: the task's `predict` (NMS included), boxes back to the
original image (the letterbox ratio/pad of the batch metadata, then clipped, as the reference's `scale_boxes`),
both matchings (`coco` and `ultralytics`) and the confusion-matrix counts. The host keeps small arrays per batch and
computes the APs at the end. Both modes are always computed; `mode` picks the headline numbers and the table.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.detectors import DetectionTask, inference_variables
from yolojax.detectors.postprocess import letterbox_gain_pad, scale_boxes
from yolojax.eval import coco, confusion, metrics
from yolojax.eval import plots as plotting
from yolojax.eval.report import format_table, summary_lines
from yolojax.ops.padding import padded_size

MODES = ("coco", "ultralytics")
_COCO_KEYS = ("scores", "classes", "rank", "kept", "matched", "ignored")


# --------------------------------------------------------------------------------------------- device: one batch
def val_step(task, variables, batch, *, conf, iou, max_det, num_classes, matrix_conf):
    """Predict, rescale, match and count one batch (pure; jit it with the keyword arguments static).

    Args:
      task: a DetectionTask. variables: its variables.
      batch: images (b, h, w, 3) uint8; gt_boxes (b, g, 4) xyxy original-image pixels; gt_cls (b, g) int;
        gt_mask (b, g) bool; image_valid (b,) bool; gain (b,), pad (b, 2), ori_hw (b, 2) float32 (see
        yolojax.detectors.postprocess.scale_boxes).
    Returns:
      dict of device arrays: det_boxes (b, d, 4) original xyxy, det_scores, det_classes, det_valid (b, d);
      correct (b, d, t) ultralytics-mode true positives; coco: `match_coco` outputs (b, ...);
      confusion (nc + 1, nc + 1).
    """
    # multi-label NMS, as the reference's validator (DetectionValidator.postprocess) runs it
    pred = task.predict(variables, batch["images"], conf=conf, iou=iou, max_det=max_det, multi_label=True)
    det_valid = pred["valid"] & batch["image_valid"][:, None]
    det_classes = pred["classes"].astype(jnp.int32)
    det_scores = pred["scores"].astype(jnp.float32)
    det_boxes = scale_boxes(pred["boxes"].astype(jnp.float32), batch["ori_hw"][:, None], batch["gain"][:, None],
                            batch["pad"][:, None])
    gt_boxes = batch["gt_boxes"].astype(jnp.float32)
    gt_valid = batch["gt_mask"] & batch["image_valid"][:, None]
    gt_cls = batch["gt_cls"].astype(jnp.int32)

    correct = metrics.match_ultralytics_batch(det_boxes, det_classes, det_valid, gt_boxes, gt_cls, gt_valid)
    to_xywh = lambda b: jnp.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], -1)  # noqa: E731
    gt_xywh = to_xywh(gt_boxes)
    coco_out = metrics.match_coco_batch(to_xywh(det_boxes), det_scores, det_classes, det_valid, gt_xywh, gt_cls,
                                        gt_valid, jnp.zeros_like(gt_valid), gt_xywh[..., 2] * gt_xywh[..., 3])
    counts = confusion.confusion_counts_batch(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_cls,
                                              gt_valid, num_classes=num_classes, conf=matrix_conf)
    return dict(det_boxes=det_boxes, det_scores=det_scores, det_classes=det_classes, det_valid=det_valid,
                correct=correct, coco=coco_out, confusion=counts)


def _build_step(task, conf, iou, max_det, num_classes, matrix_conf):
    return jax.jit(functools.partial(val_step, task, conf=conf, iou=iou, max_det=max_det, num_classes=num_classes,
                                     matrix_conf=matrix_conf))


_cached_step = functools.lru_cache(maxsize=16)(_build_step)


def jitted_step(task, *settings):
    """The compiled step, reused across calls (every epoch's val) when the task is hashable (frozen dataclass)."""
    try:
        hash(task)
    except TypeError:
        return _build_step(task, *settings)
    return _cached_step(task, *settings)


# -------------------------------------------------------------------------------------------- host: batch inputs
def _first(mapping, names, default=None):
    for name in names:
        if name in mapping:
            return mapping[name]
    return default


def _letterbox_params(meta, b, height, width, ori_hw):
    """(gain (b,), pad (b, 2)) from `ratio` + `pad`, the reference's `ratio_pad`, or the shapes alone."""
    if "ratio" in meta and "pad" in meta:  # yolojax.data: ratio (x, y); the reference scales both axes by y's
        return np.asarray(meta["ratio"], np.float32)[:, 1], np.asarray(meta["pad"], np.float32).reshape(b, 2)
    ratio_pad = _first(meta, ("ratio_pads", "ratio_pad"))
    if ratio_pad is not None:
        gain = np.array([float(np.ravel(rp[0])[0]) for rp in ratio_pad], np.float32)
        return gain, np.array([np.ravel(rp[1])[:2] for rp in ratio_pad], np.float32)
    return letterbox_gain_pad((height, width), ori_hw)


def _targets_to_original(bboxes, height, width, gain, pad, ori_hw):
    """Letterbox targets (b, m, 4) normalized xywh -> (b, m, 4) xyxy original pixels, float32 as the reference."""
    bboxes = np.asarray(bboxes, np.float32)
    xy, half = bboxes[..., :2], bboxes[..., 2:] / 2
    boxes = np.concatenate([xy - half, xy + half], -1) * np.array([width, height, width, height], np.float32)
    return scale_boxes(boxes, ori_hw[:, None], gain[:, None], pad[:, None])


def val_inputs(batch):
    """The arrays `val_step` needs, read from a dataset batch (`yolojax.data` val batches).

    Reads images, bboxes, cls, mask and the host metadata (top level or under `meta`): the valid-image mask
    (`valid`, default all valid), image ids (`image_id` or `im_file`), `ori_shape` (b, 2) h0, w0, and the letterbox
    as `ratio` + `pad` (yolojax.data) or the reference's per-image `ratio_pad`. Ground truth: the full lists
    `gt_cls` / `gt_bboxes` (xyxy original pixels) when present, else the padded targets mapped back like the
    reference does. Without `ori_shape` boxes stay in input-image pixels.
    Returns:
      (arrays for val_step, image ids list)
    """
    missing = [k for k in ("images", "bboxes", "cls", "mask") if k not in batch]
    if missing:
        raise KeyError(f"val batch lacks {missing}; a val batch needs images, bboxes, cls, mask (yolojax.data)")
    meta = {**batch, **(batch.get("meta") or {})}
    images = np.asarray(batch["images"])
    b, height, width = images.shape[:3]
    valid = np.asarray(_first(meta, ("image_valid", "valid"), np.ones(b, bool)), bool).reshape(b)
    ids = _first(meta, ("image_ids", "image_id", "im_file"), list(range(b)))
    ori = _first(meta, ("ori_shapes", "ori_shape"))
    ori_hw = np.asarray(ori, np.float32).reshape(b, 2) if ori is not None else np.tile([height, width], (b, 1))
    gain, pad = _letterbox_params(meta, b, height, width, ori_hw.astype(np.float32))
    if "gt_bboxes" in meta and "gt_cls" in meta:
        size = padded_size(max(len(c) for c in meta["gt_cls"]), minimum=16)
        gt_boxes, gt_cls = np.zeros((b, size, 4), np.float32), np.zeros((b, size), np.int32)
        gt_mask = np.zeros((b, size), bool)
        for i, (cls, boxes) in enumerate(zip(meta["gt_cls"], meta["gt_bboxes"])):
            n = len(cls)
            gt_boxes[i, :n], gt_cls[i, :n], gt_mask[i, :n] = np.reshape(boxes, (n, 4)), cls, True
    else:
        gt_boxes = _targets_to_original(batch["bboxes"], height, width, gain, pad, ori_hw)
        gt_cls, gt_mask = np.asarray(batch["cls"], np.int32), np.asarray(batch["mask"], bool)
    arrays = dict(images=images, gt_boxes=gt_boxes, gt_cls=gt_cls, gt_mask=gt_mask & valid[:, None],
                  image_valid=valid, gain=gain, pad=pad, ori_hw=ori_hw)
    return arrays, [v.item() if hasattr(v, "item") else v for v in ids]


# ------------------------------------------------------------------------------------------------ host: evaluate
class _Accumulator:
    """Host-side lists of one validation run (per image in dataset order)."""

    def __init__(self, num_classes):
        self.seen = 0
        self.tp, self.conf, self.pred_cls, self.target_cls, self.target_img = [], [], [], [], []
        self.coco_parts, self.gt_classes, self.gt_ignored = [], [], []
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
        self.records = []

    def add(self, out, arrays, ids, class_to_category=None, keep_json=False):
        out = jax.device_get(out)
        valid_images = np.flatnonzero(arrays["image_valid"])
        self.matrix += out["confusion"]
        for i in valid_images:
            self.seen += 1
            dv, gv = out["det_valid"][i], arrays["gt_mask"][i]
            self.tp.append(out["correct"][i][dv])
            self.conf.append(out["det_scores"][i][dv])
            self.pred_cls.append(out["det_classes"][i][dv])
            self.target_cls.append(arrays["gt_cls"][i][gv])
            self.target_img.append(np.unique(arrays["gt_cls"][i][gv]))
            kept = out["coco"]["kept"][i]
            self.coco_parts.append({k: out["coco"][k][i][kept] for k in _COCO_KEYS})
            self.gt_classes.append(arrays["gt_cls"][i][gv])
            self.gt_ignored.append(out["coco"]["gt_ignored"][i][gv])
        if keep_json:
            ids_valid = [ids[i] for i in valid_images]
            self.records += coco.detections_to_coco(ids_valid, out["det_boxes"][valid_images],
                                                    out["det_scores"][valid_images],
                                                    out["det_classes"][valid_images], out["det_valid"][valid_images],
                                                    class_to_category)

    def stats(self, num_classes):
        cat = lambda parts, shape, dtype: np.concatenate(parts) if parts else np.zeros(shape, dtype)  # noqa: E731
        num_t, num_a = len(metrics.IOU_THRESHOLDS), len(metrics.AREA_RANGES)
        ult = dict(tp=cat(self.tp, (0, num_t), bool), conf=cat(self.conf, (0,), np.float32),
                   pred_cls=cat(self.pred_cls, (0,), np.int32), target_cls=cat(self.target_cls, (0,), np.int32))
        target_img = cat(self.target_img, (0,), np.int32)
        empty = dict(scores=(0,), classes=(0,), rank=(0,), kept=(0,), matched=(0, num_a, num_t),
                     ignored=(0, num_a, num_t))
        dets = {k: cat([p[k] for p in self.coco_parts], empty[k], np.float32) for k in _COCO_KEYS}
        gts = (cat(self.gt_classes, (0,), np.int32), cat(self.gt_ignored, (0, num_a), bool))
        counts = dict(instances=np.bincount(ult["target_cls"], minlength=num_classes),
                      images=np.bincount(target_img, minlength=num_classes))
        return ult, dets, gts, counts


def _iterate(dataset):
    """Val batches: `dataset.iterator(0)` for a `yolojax.data` dataset, else the object itself (any iterable)."""
    if callable(getattr(dataset, "iterator", None)):
        return dataset.iterator(0)
    return iter(dataset)


def evaluate(task, variables, dataset, *, conf=0.001, iou=0.7, max_det=300, mode="coco", names=None,
             save_dir=None, plots=False, save_json=False, class_to_category=None, log=None):
    """Validate `variables` of `task` on every batch of `dataset`; the in-training and standalone val both call it.

    Args:
      task: a DetectionTask (yolojax.detectors). variables: {"params": ..., "batch_stats": ...} (EMA weights).
      dataset: val batches (see `val_inputs`), e.g. `yolojax.data.build_dataset(cfg, "val", seed)`.
      conf, iou, max_det: NMS settings (the reference's val defaults).
      mode: "coco" (pycocotools' rules) or "ultralytics" (the reference's ap_per_class) for the headline numbers.
      names: class names (index = class id); default `dataset.names` or "0", "1", ...
      save_dir: where plots / predictions.json go. plots: write the PR/F1/P/R curves and confusion matrices.
      save_json: write predictions.json (COCO results, original-image pixels).
      class_to_category: optional class index -> COCO category id for the JSON.
      log: optional callable(str) that receives the printed table.
    Returns:
      dict: mode, map50_95, map50, map75, precision, recall, fitness (0.1 mAP50 + 0.9 mAP50-95), coco (the 12
      COCOeval numbers), ultralytics (P, R, mAP50, mAP75, mAP50-95 as the reference prints), per_class rows,
      confusion_matrix (nc + 1, nc + 1), images, instances, detections (kept after NMS), files.
    """
    if mode not in MODES:
        raise ValueError(f"evaluate: mode must be one of {MODES}, got {mode!r}")
    num_classes = int(task.num_classes)
    names = list(names if names is not None else getattr(dataset, "names", None) or map(str, range(num_classes)))
    step = jitted_step(task, float(conf), float(iou), int(max_det), num_classes, confusion.matrix_conf(conf))
    variables = inference_variables(task, variables)
    acc = _Accumulator(num_classes)
    batches = _iterate(dataset)
    pending = None  # one batch in flight: the device computes batch k + 1 while the host files batch k
    try:
        for batch in batches:
            arrays, ids = val_inputs(batch)
            current = (step(variables, arrays), arrays, ids)
            if pending is not None:
                acc.add(*pending, class_to_category, keep_json=save_json)
            pending = current
        if pending is not None:
            acc.add(*pending, class_to_category, keep_json=save_json)
    finally:
        if callable(getattr(batches, "close", None)):
            batches.close()
    result = metrics.build_report(*acc.stats(num_classes), acc.matrix, names, mode=mode, images=acc.seen)
    curves = result.pop("_curves")
    result["detections"] = int(sum(len(c) for c in acc.conf))
    result["files"] = _write_outputs(result, curves, acc.records if save_json else None, names, save_dir, plots)
    if log is not None:
        log(format_table(result, names))
    return result


def evaluate_ema(task: DetectionTask, ema_variables: dict, data: Any, cfg: Any) -> dict:
    """The train loop's `evaluate`: mAP of the EMA weights on the val split of the run's TrainData ->
    results.csv columns (reference names) + fitness, and "table": the header and `all` row to print."""
    batches = data.val_batches()
    result = evaluate(task, ema_variables, batches, conf=cfg.conf if cfg.conf is not None else 0.001,
                      iou=cfg.iou, max_det=cfg.max_det, names=list(data.names))
    return {"metrics/precision(B)": float(result["precision"]), "metrics/recall(B)": float(result["recall"]),
            "metrics/mAP50(B)": float(result["map50"]), "metrics/mAP50-95(B)": float(result["map50_95"]),
            "fitness": float(result["fitness"]), "table": summary_lines(result)}


def _write_outputs(result, curves, records, names, save_dir, plots):
    if save_dir is None:
        if plots or records is not None:
            warnings.warn("evaluate: plots/save_json need save_dir; nothing written", stacklevel=3)
        return []

    files = []
    if plots:
        files += plotting.save_all_plots(curves, result["confusion_matrix"], names, save_dir, table=result)
    if records is not None:
        files.append(coco.save_json(records, Path(save_dir) / "predictions.json"))
    return [str(f) for f in files]
