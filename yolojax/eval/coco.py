"""COCO JSON in and out, and `coco_eval`: pycocotools' bbox numbers from two JSON files, matched on device.

`coco_eval(gt_json, dt_json)` reads the files like pycocotools (COCO.loadRes): every ground-truth image and category
is evaluated, detections of unknown categories are dropped, a detection's area is `w * h` and a ground truth's is
its `area` field. The matching runs in float64 (`jax.enable_x64`) so that IoUs on a threshold compare exactly as in
pycocotools.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import jax
import numpy as np

from yolojax.eval import metrics
from yolojax.ops.padding import padded_size
from yolojax.xla_flags import jax_setting

_MATCH_KEYS = ("scores", "classes", "rank", "kept", "matched", "ignored")


# ------------------------------------------------------------------------------------------------------ reading
def _read_json(path, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _bbox(record, path, index: int):
    box = record.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{path}: record {index} has no 4-number 'bbox' [x, y, w, h]: {box!r}")
    return [float(v) for v in box]


def load_coco_gt(path):
    """Ground truth of a COCO instances file.

    Returns:
      dict: image_ids (i,) sorted, category_ids (k,) sorted, and per annotation (in file order): image_id (m,),
      category_id (m,), bbox (m, 4) float64 COCO xywh pixels, area (m,) float64, iscrowd (m,) bool.
    """
    data = _read_json(path, "ground-truth")
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not a COCO instances file (needs 'images' and 'annotations')")
    anns = data["annotations"]
    image_ids = np.unique(np.array([img["id"] for img in data["images"]], dtype=np.int64))
    cats = data.get("categories") or [{"id": a["category_id"]} for a in anns]
    category_ids = np.unique(np.array([c["id"] for c in cats], dtype=np.int64))
    boxes = np.array([_bbox(a, path, i) for i, a in enumerate(anns)], dtype=np.float64).reshape(-1, 4)
    missing_area = [i for i, a in enumerate(anns) if "area" not in a]
    if missing_area:
        warnings.warn(f"{path}: {len(missing_area)} annotations have no 'area'; using the box area w*h", stacklevel=2)
    area = np.array([a["area"] if "area" in a else b[2] * b[3] for a, b in zip(anns, boxes)], dtype=np.float64)
    return dict(
        image_ids=image_ids, category_ids=category_ids,
        image_id=np.array([a["image_id"] for a in anns], dtype=np.int64),
        category_id=np.array([a["category_id"] for a in anns], dtype=np.int64),
        bbox=boxes, area=area, iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool))


def load_coco_dets(path, gt):
    """Detections of a COCO results file (a list of {image_id, category_id, bbox, score}), in file order.

    Raises ValueError when a detection names an image the ground truth does not have (pycocotools refuses too).
    Detections of categories absent from the ground truth are dropped, as COCOeval does.
    Returns:
      dict: image_id (n,), category_id (n,), bbox (n, 4) float64 COCO xywh, score (n,) float64.
    """
    data = _read_json(path, "detections")
    if not isinstance(data, list):
        raise ValueError(f"{path}: a COCO results file is a JSON list of detections, got {type(data).__name__}")
    for i, d in enumerate(data):
        if not all(k in d for k in ("image_id", "category_id", "score")):
            raise ValueError(f"{path}: detection {i} lacks one of image_id, category_id, score: {d!r}")
    dets = dict(image_id=np.array([d["image_id"] for d in data], dtype=np.int64),
                category_id=np.array([d["category_id"] for d in data], dtype=np.int64),
                bbox=np.array([_bbox(d, path, i) for i, d in enumerate(data)], dtype=np.float64).reshape(-1, 4),
                score=np.array([d["score"] for d in data], dtype=np.float64))
    unknown = np.setdiff1d(dets["image_id"], gt["image_ids"])
    if unknown.size:
        raise ValueError(f"{path}: {unknown.size} detected image ids are not in the ground truth, e.g. {unknown[:5]}")
    known = np.isin(dets["category_id"], gt["category_ids"])
    return {k: v[known] for k, v in dets.items()}


# ------------------------------------------------------------------------------------------------------ writing
def detections_to_coco(image_ids, boxes_xyxy, scores, classes, valid, class_to_category=None):
    """COCO results records from padded per-image detections (the reference's rounding: bbox 3, score 5 decimals).

    Args:
      image_ids: (b,) ids (int, or str for non-numeric file stems). boxes_xyxy: (b, d, 4) pixels of the original
      image. scores: (b, d). classes: (b, d) int. valid: (b, d) bool.
      class_to_category: optional sequence mapping class index -> COCO category id (e.g. the 80 -> 91 COCO map).
    Returns:
      list of dicts {image_id, category_id, bbox [x, y, w, h], score}.
    """
    records = []
    for i, image_id in enumerate(image_ids):
        for box, score, cls in zip(boxes_xyxy[i][valid[i]], scores[i][valid[i]], classes[i][valid[i]]):
            x1, y1, x2, y2 = (float(v) for v in box)
            category = int(class_to_category[int(cls)]) if class_to_category is not None else int(cls)
            records.append(dict(image_id=image_id, category_id=category,
                                bbox=[round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                                score=round(float(score), 5)))
    return records


def save_json(records, path):
    """Write a COCO results list (or any JSON value) to `path`, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(records, f)
    return path


# --------------------------------------------------------------------------------------------------- evaluation
def _group(image_index, num_images):
    """Row indices per image, each group in file order: list of (r,) arrays."""
    order = np.argsort(image_index, kind="stable")
    return np.split(order, np.searchsorted(image_index[order], np.arange(1, num_images)))


def _padded(rows_per_image, values, size, fill=0):
    out = np.full((len(rows_per_image), size) + values.shape[1:], fill, dtype=values.dtype)
    mask = np.zeros((len(rows_per_image), size), dtype=bool)
    for i, rows in enumerate(rows_per_image):
        out[i, :len(rows)] = values[rows]
        mask[i, :len(rows)] = True
    return out, mask


_match_coco_jit = jax.jit(metrics.match_coco_batch)


@contextlib.contextmanager
def _x64():
    """float64 on device for the duration (jax.enable_x64, or the config flag where that context manager is
    missing)."""
    enable = getattr(jax, "enable_x64", None)
    if enable is not None:
        with enable(True):
            yield
        return
    with jax_setting("jax_enable_x64", True):
        yield


def match_coco_arrays(gt, dets, *, images_per_call: int = 64):
    """Run `match_coco` image by image over loaded JSON arrays (float64 on device), flattened for the host.

    Returns:
      (det_flat, gt_classes, gt_ignored): det_flat holds the `match_coco` outputs of the kept detections,
      concatenated in image-id order; gt_classes (m,), gt_ignored (m, a) for every ground-truth box.
    """
    num_images = len(gt["image_ids"])
    gt_rows = _group(np.searchsorted(gt["image_ids"], gt["image_id"]), num_images)
    det_rows = _group(np.searchsorted(gt["image_ids"], dets["image_id"]), num_images)
    det_parts, gt_cls_parts, gt_ign_parts = [], [], []
    for start in range(0, num_images, images_per_call):
        g_rows, d_rows = gt_rows[start:start + images_per_call], det_rows[start:start + images_per_call]
        g_size = padded_size(max(len(r) for r in g_rows))
        d_size = padded_size(max(len(r) for r in d_rows))
        gt_box, gt_valid = _padded(g_rows, gt["bbox"], g_size)
        gt_cls, _ = _padded(g_rows, gt["category_id"], g_size, fill=-1)
        gt_crowd, _ = _padded(g_rows, gt["iscrowd"], g_size)
        gt_area, _ = _padded(g_rows, gt["area"], g_size)
        det_box, det_valid = _padded(d_rows, dets["bbox"], d_size)
        det_score, _ = _padded(d_rows, dets["score"], d_size)
        det_cls, _ = _padded(d_rows, dets["category_id"], d_size, fill=-2)
        with _x64():
            out = _match_coco_jit(det_box, det_score, det_cls, det_valid, gt_box, gt_cls, gt_valid, gt_crowd, gt_area)
            out = jax.device_get(out)
        kept = out["kept"].reshape(-1)
        det_parts.append({k: out[k].reshape((-1,) + out[k].shape[2:])[kept] for k in _MATCH_KEYS})
        gt_cls_parts.append(gt_cls[gt_valid])
        gt_ign_parts.append(out["gt_ignored"][gt_valid])
    det_flat = {k: np.concatenate([p[k] for p in det_parts]) for k in _MATCH_KEYS}
    return det_flat, np.concatenate(gt_cls_parts), np.concatenate(gt_ign_parts)


def coco_eval_arrays(gt, dets):
    """pycocotools' bbox summary from loaded arrays (see `load_coco_gt` / `load_coco_dets`).

    Returns:
      dict with the 12 `coco_summary` keys (fractions, -1 when undefined) plus `per_class`: {category_id: AP50-95}
      and `per_class_ap50`, and `precision` (t, r, k, a, md) / `recall` (t, k, a, md) arrays.
    """
    det_flat, gt_classes, gt_ignored = match_coco_arrays(gt, dets)
    precision, recall = metrics.coco_accumulate(det_flat, gt_classes, gt_ignored, gt["category_ids"])
    out = metrics.coco_summary(precision, recall)
    ap50_95, ap50 = metrics.coco_per_class(precision)
    out["per_class"] = {int(c): float(v) for c, v in zip(gt["category_ids"], ap50_95)}
    out["per_class_ap50"] = {int(c): float(v) for c, v in zip(gt["category_ids"], ap50)}
    out["precision"], out["recall"] = precision, recall
    return out


def coco_eval(gt_json_path, dt_json_path) -> dict:
    """Score a COCO results file against a COCO instances file, as pycocotools' COCOeval('bbox') does.

    Args:
      gt_json_path: COCO instances JSON (images, annotations with bbox/area/iscrowd, categories).
      dt_json_path: COCO results JSON: [{image_id, category_id, bbox [x, y, w, h], score}, ...].
    Returns:
      dict of fractions in [0, 1] (-1 when undefined): map50_95, map50, map75, map_small, map_medium, map_large,
      ar1, ar10, ar100, ar_small, ar_medium, ar_large; plus per_class / per_class_ap50 ({category_id: AP}).
    """
    gt = load_coco_gt(gt_json_path)
    dets = load_coco_dets(dt_json_path, gt)
    out = coco_eval_arrays(gt, dets)
    out.pop("precision"), out.pop("recall")
    return out
