"""Detection metrics: matching on device (jit, fixed shapes), precision/recall and AP on the host (numpy).

Two rule sets, both over the ten IoU thresholds 0.50:0.05:0.95:

* `coco` — pycocotools' COCOeval for bboxes. Per image and category, detections in descending score (stable) take
  the best-IoU ground truth still free; regular ground truth is preferred over ignored ground truth (crowd, or
  outside the area range), crowd boxes can absorb any number of detections and their IoU is intersection over the
  detection's area. At most 100 detections per image and category take part; the AP is the mean of a 101-point
  interpolated precision, per area range (all/small/medium/large) and detection budget (1/10/100).
* `ultralytics` — the reference's `match_predictions` (its default, non-scipy path) and `ap_per_class`: each
  detection proposes its best class-matching label with IoU >= t; a label proposed by several detections goes to
  the lowest-index one (detections come sorted by confidence); the losers stay false positives. AP integrates the
  101-point interpolated envelope with the trapezoid rule; P and R are read at the confidence that maximises the
  smoothed mean F1.

Device functions take one image (vmap them, or use the `*_batch` wrappers); host functions take flat numpy arrays.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from yolojax.ops.boxes import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_NAMES = ("all", "small", "medium", "large")
AREA_RANGES = np.array([[0.0, 1e5**2], [0.0, 32.0**2], [32.0**2, 96.0**2], [96.0**2, 1e5**2]])
MAX_DETS = (1, 10, 100)


# ----------------------------------------------------------------------------------------------- device: matching
def _last_argmax(values, axis):
    """Index of the last maximum along `axis` (pycocotools and the reference keep the later of equal IoUs)."""
    size = values.shape[axis]
    return size - 1 - jnp.argmax(jnp.flip(values, axis=axis), axis=axis)


def coco_iou(det_xywh, gt_xywh, gt_crowd):
    """pycocotools' bbox IoU; for a crowd ground truth the union is the detection's area.

    Args:
      det_xywh: (d, 4) COCO boxes `x, y, w, h` (top-left corner and size), pixels.
      gt_xywh: (g, 4) same format.
      gt_crowd: (g,) bool.
    Returns:
      (d, g) IoU, 0 where the boxes do not overlap; the dtype of the boxes.
    """
    dx, dy, dw, dh = (det_xywh[:, None, i] for i in range(4))
    gx, gy, gw, gh = (gt_xywh[None, :, i] for i in range(4))
    w = jnp.minimum(dx + dw, gx + gw) - jnp.maximum(dx, gx)
    h = jnp.minimum(dy + dh, gy + gh) - jnp.maximum(dy, gy)
    inter = w * h
    det_area, gt_area = dw * dh, gw * gh
    union = jnp.where(gt_crowd[None, :], det_area, det_area + gt_area - inter)
    overlap = (w > 0) & (h > 0)
    return jnp.where(overlap, inter / jnp.where(overlap, union, 1), 0)


def match_coco(det_xywh, det_scores, det_classes, det_valid, gt_xywh, gt_classes, gt_valid, gt_crowd, gt_area, *,
               iou_thresholds=IOU_THRESHOLDS, area_ranges=AREA_RANGES, max_det_per_class: int = MAX_DETS[-1]):
    """COCOeval's greedy matching of one image, all categories and area ranges at once.

    Args:
      det_xywh: (d, 4) COCO `x, y, w, h`, pixels; computed in this dtype (float64 under `jax.enable_x64` gives
        pycocotools' numbers bit for bit). d >= 1.
      det_scores: (d,) float. det_classes: (d,) int. det_valid: (d,) bool (padding False). Valid rows keep their
        input order among equal scores, as pycocotools' mergesort does.
      gt_xywh: (g, 4) COCO `x, y, w, h`, pixels. g >= 1.
      gt_classes: (g,) int. gt_valid: (g,) bool. gt_crowd: (g,) bool (`iscrowd`, also ignored).
      gt_area: (g,) the annotation's `area` field (for COCO data the mask area), pixels^2; decides the area range.
      iou_thresholds: (t,) host array. area_ranges: (a, 2) host array of inclusive [lo, hi] areas, pixels^2.
      max_det_per_class: detections beyond this rank in their category are dropped before matching.
    Returns:
      dict, detections in descending-score order:
        scores (d,), classes (d,), rank (d,) int32 position among the image's kept detections of the same class,
        kept (d,) bool valid and rank < max_det_per_class,
        matched (d, a, t) bool, ignored (d, a, t) bool (matched to an ignored ground truth, or unmatched and outside
        the area range), gt_ignored (g, a) bool (crowd or outside the area range).
    """
    num_gt = gt_xywh.shape[0]
    dtype = det_xywh.dtype
    order = jnp.argsort(jnp.where(det_valid, -det_scores, jnp.inf), stable=True)
    det_xywh, det_scores, det_classes, det_valid = (x[order] for x in (det_xywh, det_scores, det_classes, det_valid))

    same_class = det_classes[:, None] == det_classes[None, :]
    earlier = jnp.tri(det_scores.shape[0], k=-1, dtype=bool)  # [i, j]: j ranks before i
    rank = jnp.sum(same_class & earlier & det_valid[None, :], axis=1).astype(jnp.int32)
    kept = det_valid & (rank < max_det_per_class)

    ious = coco_iou(det_xywh, gt_xywh, gt_crowd)
    pair_ok = kept[:, None] & gt_valid[None, :] & (det_classes[:, None] == gt_classes[None, :])
    ious = jnp.where(pair_ok, ious, -1).astype(dtype)

    ranges = jnp.asarray(area_ranges, dtype)
    lo, hi = ranges[:, 0:1], ranges[:, 1:2]
    gt_ignored = gt_crowd[None, :] | (gt_area[None, :] < lo) | (gt_area[None, :] > hi)  # (a, g)
    det_area = (det_xywh[:, 2] * det_xywh[:, 3])[:, None]
    det_outside = (det_area < lo[:, 0]) | (det_area > hi[:, 0])  # (d, a)
    thresholds = jnp.asarray(iou_thresholds, dtype)[None, :, None]  # (1, t, 1)
    ignored_gt = gt_ignored[:, None, :]  # (a, 1, g)

    def match_one(taken, iou_row):
        free = ~taken | gt_crowd
        candidate = free & (iou_row >= thresholds)  # (a, t, g)
        regular = candidate & ~ignored_gt
        pool = jnp.where(jnp.any(regular, axis=-1, keepdims=True), regular, candidate & ignored_gt)
        matched = jnp.any(pool, axis=-1)
        best = _last_argmax(jnp.where(pool, iou_row, -jnp.inf), axis=-1)
        hit = (jnp.arange(num_gt) == best[..., None]) & matched[..., None]
        return taken | hit, (matched, jnp.any(hit & ignored_gt, axis=-1))

    taken0 = jnp.zeros(ignored_gt.shape[:1] + (thresholds.shape[1], num_gt), bool)
    _, (matched, matched_ignored) = lax.scan(match_one, taken0, ious)
    ignored = jnp.where(matched, matched_ignored, det_outside[:, :, None])
    return dict(scores=det_scores, classes=det_classes, rank=rank, kept=kept, matched=matched, ignored=ignored,
                gt_ignored=gt_ignored.T)


def match_coco_batch(det_xywh, det_scores, det_classes, det_valid, gt_xywh, gt_classes, gt_valid, gt_crowd, gt_area,
                     **kwargs):
    """`match_coco` over a leading batch axis: every argument gains a `(b, ...)` axis, as does every output."""
    fn = lambda *a: match_coco(*a, **kwargs)  # noqa: E731
    return jax.vmap(fn)(det_xywh, det_scores, det_classes, det_valid, gt_xywh, gt_classes, gt_valid, gt_crowd,
                        gt_area)


def match_ultralytics(det_boxes, det_classes, det_valid, gt_boxes, gt_classes, gt_valid, *,
                      iou_thresholds=IOU_THRESHOLDS):
    """The reference's `match_predictions` (use_scipy=False) for one image.

    Args:
      det_boxes: (d, 4) xyxy pixels, in the order the NMS returned them (descending confidence).
      det_classes: (d,) int. det_valid: (d,) bool.
      gt_boxes: (g, 4) xyxy, same units. gt_classes: (g,) int. gt_valid: (g,) bool. g >= 1.
      iou_thresholds: (t,) host array; compared in the boxes' dtype, as the reference compares float32.
    Returns:
      (d, t) bool, true where the detection is a true positive at that threshold.
    """
    num_det = det_boxes.shape[0]
    iou = box_iou(gt_boxes, det_boxes)
    same = (gt_classes[:, None] == det_classes[None, :]) & gt_valid[:, None] & det_valid[None, :]
    iou = jnp.where(same, iou, 0)
    thresholds = jnp.asarray(iou_thresholds, iou.dtype)[:, None, None]
    candidate = iou[None] >= thresholds  # (t, g, d)
    proposes = jnp.any(candidate, axis=1)  # (t, d)
    label = _last_argmax(jnp.where(candidate, iou[None], -1), axis=1)  # (t, d): best label, later on ties
    chosen = (jnp.arange(gt_boxes.shape[0])[None, :, None] == label[:, None, :]) & proposes[:, None, :]
    first = jnp.argmax(chosen, axis=2)  # (t, g): lowest detection index that proposed each label
    winner = jnp.take_along_axis(first, label, axis=1)
    return (proposes & (winner == jnp.arange(num_det)[None, :])).T


def match_ultralytics_batch(det_boxes, det_classes, det_valid, gt_boxes, gt_classes, gt_valid, **kwargs):
    """`match_ultralytics` over a leading batch axis: (b, d, t) bool."""
    fn = lambda *a: match_ultralytics(*a, **kwargs)  # noqa: E731
    return jax.vmap(fn)(det_boxes, det_classes, det_valid, gt_boxes, gt_classes, gt_valid)


# ------------------------------------------------------------------------------------- host: ultralytics-mode AP
def smooth(values, fraction: float):
    """Box filter over `round(len * fraction * 2) // 2 + 1` samples, edges padded with the end values. (n,) -> (n,)."""
    width = round(len(values) * fraction * 2) // 2 + 1
    pad = width // 2
    padded = np.concatenate([np.full(pad, values[0]), values, np.full(pad, values[-1])])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def interpolated_ap(recall, precision):
    """The reference's `compute_ap` ('interp'): trapezoid area under the 101-point sampled precision envelope.

    Args:
      recall: (n,) nondecreasing. precision: (n,).
    Returns:
      ap (float), envelope (n + 2,) precision with sentinels, sentinel recall (n + 2,).
    """
    rec = np.concatenate(([0.0], recall, [1.0]))
    env = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([1.0], precision, [0.0])))))
    grid = np.linspace(0, 1, 101)
    sampled = np.interp(grid, rec, env)
    ap = float((np.diff(grid) * (sampled[1:] + sampled[:-1]) / 2.0).sum())  # np.trapz, which numpy 2.4 dropped
    return ap, env, rec


def ap_per_class(tp, conf, pred_cls, target_cls, *, eps: float = 1e-16):
    """AP per class and IoU threshold, with the max-F1 operating point (the reference's `ap_per_class`).

    Args:
      tp: (n, t) bool, true positives of every detection in the dataset.
      conf: (n,) float confidences. pred_cls: (n,) class ids of the detections.
      target_cls: (m,) class ids of every ground-truth box.
    Returns:
      dict: classes (k,) int the classes with ground truth, sorted; ap (k, t); p, r, f1 (k,) at the max-F1
      confidence; tp, fp (k,) counts there; curves: px (1000,) confidence grid, p_curve, r_curve, f1_curve (k, 1000),
      pr_curve (k, 1000) interpolated precision at IoU 0.5 over the recall grid px.
    """
    conf = np.asarray(conf)
    order = np.argsort(-conf)  # numpy's default sort, as the reference: equal confidences then fall the same way
    tp, conf, pred_cls = np.asarray(tp)[order], conf[order], np.asarray(pred_cls)[order]
    classes, n_targets = np.unique(target_cls, return_counts=True)
    num_thr = tp.shape[1]
    px = np.linspace(0, 1, 1000)
    ap = np.zeros((len(classes), num_thr))
    p_curve, r_curve, pr_curve = (np.zeros((len(classes), 1000)) for _ in range(3))
    for k, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (n_targets[k] + eps)
        precision = tpc / (tpc + fpc)
        r_curve[k] = np.interp(-px, -conf[mine], recall[:, 0], left=0)
        p_curve[k] = np.interp(-px, -conf[mine], precision[:, 0], left=1)
        for j in range(num_thr):
            ap[k, j], env, rec = interpolated_ap(recall[:, j], precision[:, j])
            if j == 0:
                pr_curve[k] = np.interp(px, rec, env)
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    best = smooth(f1_curve.mean(0), 0.1).argmax() if len(classes) else 0
    p, r, f1 = p_curve[:, best], r_curve[:, best], f1_curve[:, best]
    tp_count = (r * n_targets).round()
    fp_count = (tp_count / (p + eps) - tp_count).round()
    return dict(classes=classes.astype(int), ap=ap, p=p, r=r, f1=f1, tp=tp_count, fp=fp_count, px=px,
                p_curve=p_curve, r_curve=r_curve, f1_curve=f1_curve, pr_curve=pr_curve)


def ultralytics_summary(per_class):
    """Mean P, R, mAP50, mAP75, mAP50-95 as the reference prints them; all 0 when no class has ground truth.

    Args:
      per_class: `ap_per_class` output, or None when the dataset had no true positive at all (the reference then
        reports zeros).
    """
    if per_class is None or len(per_class["classes"]) == 0:
        return dict(precision=0.0, recall=0.0, map50=0.0, map75=0.0, map50_95=0.0)
    ap = per_class["ap"]
    return dict(precision=float(per_class["p"].mean()), recall=float(per_class["r"].mean()),
                map50=float(ap[:, 0].mean()), map75=float(ap[:, 5].mean()), map50_95=float(ap.mean()))


# ------------------------------------------------------------------------------------------- host: COCO-mode AP
def coco_accumulate(dets, gt_classes, gt_ignored, category_ids, *, max_dets=MAX_DETS,
                    recall_thresholds=RECALL_THRESHOLDS):
    """COCOeval.accumulate from the flat output of `match_coco`.

    Args:
      dets: dict of host arrays over all images' detections, concatenated image by image in `match_coco`'s order:
        scores (n,), classes (n,), rank (n,), kept (n,), matched (n, a, t), ignored (n, a, t).
      gt_classes: (m,) class of every valid ground-truth box. gt_ignored: (m, a) bool.
      category_ids: (k,) the categories evaluated (others are skipped).
    Returns:
      precision (t, r, k, a, md) and recall (t, k, a, md), -1 where a category has no regular ground truth.
    """
    keep = np.asarray(dets["kept"], bool)
    scores, classes, rank = (np.asarray(dets[key])[keep] for key in ("scores", "classes", "rank"))
    matched, ignored = np.asarray(dets["matched"], bool)[keep], np.asarray(dets["ignored"], bool)[keep]
    num_t, num_a = matched.shape[2], matched.shape[1]
    category_ids = np.asarray(category_ids)
    precision = -np.ones((num_t, len(recall_thresholds), len(category_ids), num_a, len(max_dets)))
    recall = -np.ones((num_t, len(category_ids), num_a, len(max_dets)))
    # one sort for everything: by category, then descending score, ties in arrival (image, then in-image) order
    order = np.lexsort((np.arange(len(scores)), -scores, classes))
    classes, rank, matched, ignored = classes[order], rank[order], matched[order], ignored[order]
    bounds = np.searchsorted(classes, category_ids, side="left"), np.searchsorted(classes, category_ids, "right")
    gt_classes, gt_regular = np.asarray(gt_classes), ~np.asarray(gt_ignored, bool)
    for k, cat in enumerate(category_ids):
        n_regular = np.count_nonzero(gt_regular[gt_classes == cat], axis=0)
        in_cat = np.arange(bounds[0][k], bounds[1][k])
        for m, max_det in enumerate(max_dets):
            sel = in_cat[rank[in_cat] < max_det]
            for a in range(num_a):
                if n_regular[a] == 0:
                    continue
                counted = ~ignored[sel, a]
                tp_sum = np.cumsum(matched[sel, a] & counted, axis=0, dtype=float)
                fp_sum = np.cumsum(~matched[sel, a] & counted, axis=0, dtype=float)
                precision[:, :, k, a, m], recall[:, k, a, m] = _interpolate_pr(
                    tp_sum, fp_sum, n_regular[a], recall_thresholds)
    return precision, recall


def _interpolate_pr(tp_sum, fp_sum, n_regular, recall_thresholds):
    """COCO's precision at each recall threshold: (n, t) cumulative counts -> (t, r) precision, (t,) final recall."""
    n, num_t = tp_sum.shape
    if n == 0:
        return np.zeros((num_t, len(recall_thresholds))), np.zeros(num_t)
    rc = tp_sum / n_regular
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.flip(np.maximum.accumulate(np.flip(pr, 0), axis=0), 0)
    out = np.zeros((num_t, len(recall_thresholds)))
    for t in range(num_t):
        idx = np.searchsorted(rc[:, t], recall_thresholds, side="left")
        inside = idx < n
        out[t, inside] = pr[idx[inside], t]
    return out, rc[-1]


def coco_summary(precision, recall, *, iou_thresholds=IOU_THRESHOLDS, max_dets=MAX_DETS):
    """COCOeval.summarize's 12 numbers as a dict of fractions (-1 where undefined), keys map50_95, map50, map75,
    map_small, map_medium, map_large, ar1, ar10, ar100, ar_small, ar_medium, ar_large."""

    def mean_defined(x):
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    top = len(max_dets) - 1
    t50, t75 = (int(np.argmin(np.abs(iou_thresholds - v))) for v in (0.5, 0.75))
    out = dict(map50_95=mean_defined(precision[..., 0, top]), map50=mean_defined(precision[t50, ..., 0, top]),
               map75=mean_defined(precision[t75, ..., 0, top]))
    for a, name in enumerate(AREA_NAMES[1:], start=1):
        out[f"map_{name}"] = mean_defined(precision[..., a, top])
    for m, max_det in enumerate(max_dets):
        out[f"ar{max_det}"] = mean_defined(recall[..., 0, m])
    for a, name in enumerate(AREA_NAMES[1:], start=1):
        out[f"ar_{name}"] = mean_defined(recall[..., a, top])
    return out


def coco_per_class(precision):
    """Per-category AP50-95 and AP50 (area all, largest budget), -1 for categories without ground truth: (k,), (k,)."""
    ap = precision[..., 0, -1]  # (t, r, k)
    valid = ap > -1
    counts = valid.sum(axis=(0, 1))
    ap50_95 = np.where(counts > 0, np.where(valid, ap, 0).sum(axis=(0, 1)) / np.maximum(counts, 1), -1.0)
    ap50_valid = valid[0].sum(0)
    ap50 = np.where(ap50_valid > 0, np.where(valid[0], ap[0], 0).sum(0) / np.maximum(ap50_valid, 1), -1.0)
    return ap50_95, ap50


# ------------------------------------------------------------------------------------------ host: one run's report
def build_report(ult, coco_dets, coco_gts, counts, matrix, names, *, mode: str, images: int):
    """Both modes' numbers and the per-class rows of one validation run.

    Args:
      ult: dict tp (n, t), conf (n,), pred_cls (n,), target_cls (m,) — the reference's stats.
      coco_dets: flat `match_coco` outputs of the kept detections, image by image. coco_gts: (gt_classes (m,),
        gt_ignored (m, a)).
      counts: dict instances (nc,), images (nc,) — boxes and images per class. matrix: (nc + 1, nc + 1) counts.
      names: class names. mode: "coco" or "ultralytics" (headline and per-class AP). images: images seen.
    Returns:
      dict: mode, map50_95, map50, map75, precision, recall, fitness, coco {...}, ultralytics {...}, per_class
      [{class, name, images, instances, precision, recall, map50, map50_95}], confusion_matrix, images, instances,
      and `_curves` (the `ap_per_class` output for the plots, or None).
    """
    num_classes = len(counts["instances"])
    per_class = ap_per_class(**ult) if np.asarray(ult["tp"]).any() else None  # the reference: zeros without any TP
    ult_summary = ultralytics_summary(per_class)
    precision, recall = coco_accumulate(coco_dets, *coco_gts, np.arange(num_classes))
    coco_stats = coco_summary(precision, recall)
    coco_ap, coco_ap50 = coco_per_class(precision)
    pr = {}
    if per_class is not None:
        pr = {int(c): (per_class["p"][k], per_class["r"][k], per_class["ap"][k, 0], per_class["ap"][k].mean())
              for k, c in enumerate(per_class["classes"])}
    if mode == "ultralytics":
        classes = sorted(pr)
        headline = ult_summary
    else:
        classes = [c for c in range(num_classes) if coco_ap[c] > -1]
        headline = {k: max(coco_stats[k], 0.0) for k in ("map50_95", "map50", "map75")}
    rows = []
    for c in classes:
        p, r, ult_ap50, ult_ap = pr.get(c, (0.0, 0.0, 0.0, 0.0))
        ap50, ap = (ult_ap50, ult_ap) if mode == "ultralytics" else (coco_ap50[c], coco_ap[c])
        rows.append(dict(cls=c, name=names[c] if c < len(names) else str(c), images=int(counts["images"][c]),
                         instances=int(counts["instances"][c]), precision=float(p), recall=float(r),
                         map50=float(ap50), map50_95=float(ap)))
    return dict(mode=mode, map50_95=headline["map50_95"], map50=headline["map50"], map75=headline["map75"],
                precision=ult_summary["precision"], recall=ult_summary["recall"],
                fitness=0.1 * headline["map50"] + 0.9 * headline["map50_95"], coco=coco_stats,
                ultralytics=ult_summary, per_class=rows, confusion_matrix=np.asarray(matrix), images=int(images),
                instances=int(np.sum(counts["instances"])), _curves=per_class)
