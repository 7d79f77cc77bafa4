"""Evaluation plots (matplotlib, Agg): PR curve, F1/P/R-confidence curves, confusion matrices, and a val batch's
labels and predictions (val_batch0_labels.jpg / val_batch0_pred.jpg).

Files only: every function takes arrays computed elsewhere (`metrics.ap_per_class`, `confusion`, the val step) and
writes one file. The PR curve's legend shows the numbers of the printed table (`table`: the result of
`yolojax.eval.val.evaluate`, whose mode, coco by default, decides them), the curves themselves are the reference's
interpolated precision at IoU 0.5.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolojax.data.preview import draw_batch_grid
from yolojax.eval.confusion import normalize_columns
from yolojax.eval.metrics import smooth

LEGEND_MAX_CLASSES = 20
DARK_CELL_LUMINANCE = 0.5  # cells whose colour is darker than this get white numbers
PLOT_CONF = 0.25  # val_batch0_pred.jpg draws detections above this score (the reference's plot_images threshold)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    _pyplot().close(fig)
    return path


def plot_pr_curve(px, pr_curve, ap50, names, path, *, mean_ap50=None):
    """Precision-recall curves at IoU 0.5.

    Args:
      px: (1000,) recall grid. pr_curve: (k, 1000) precision per class. ap50: (k,) AP at IoU 0.5 shown per class.
      names: (k,) class names. path: PNG file. mean_ap50: the `all classes` number (default: mean of ap50).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), tight_layout=True)
    if 0 < len(names) <= LEGEND_MAX_CLASSES:
        for name, y, ap in zip(names, pr_curve, ap50):
            ax.plot(px, y, linewidth=1, label=f"{name} {ap:.3f}")
    elif len(names):
        ax.plot(px, np.asarray(pr_curve).T, linewidth=1, color="grey")
    if len(names):
        mean = np.mean(ap50) if mean_ap50 is None else mean_ap50
        ax.plot(px, np.mean(pr_curve, 0), linewidth=3, color="blue", label=f"all classes {mean:.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return _save(fig, path)


def plot_metric_curve(px, curves, names, path, *, ylabel: str):
    """A metric against confidence (F1, precision or recall), per class and the smoothed class mean.

    Args:
      px: (1000,) confidence grid. curves: (k, 1000). names: (k,) class names. path: PNG file. ylabel: metric name.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), tight_layout=True)
    if 0 < len(names) <= LEGEND_MAX_CLASSES:
        for name, y in zip(names, curves):
            ax.plot(px, y, linewidth=1, label=str(name))
    elif len(names):
        ax.plot(px, np.asarray(curves).T, linewidth=1, color="grey")
    if len(names):
        mean = smooth(np.mean(curves, 0), 0.05)
        ax.plot(px, mean, linewidth=3, color="blue", label=f"all classes {mean.max():.2f} at {px[mean.argmax()]:.3f}")
    ax.set(xlabel="Confidence", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel}-Confidence Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return _save(fig, path)


def text_colours(rgba):
    """Black or white per cell, whichever reads on the cell's colour: white where its luminance (ITU-R BT.601
    weights of the RGB in [0, 1]) is below DARK_CELL_LUMINANCE. rgba: (..., 4) -> (...) array of colour names."""
    rgba = np.asarray(rgba, np.float64)
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
    return np.where(luminance < DARK_CELL_LUMINANCE, "white", "black")


def confusion_figure(matrix, names, *, normalize: bool):
    """The confusion-matrix figure (see `plot_confusion_matrix`); each number's colour follows its cell's."""
    plt = _pyplot()
    values = normalize_columns(matrix) if normalize else np.asarray(matrix, dtype=np.float64)
    shown = np.where(values < 0.005, np.nan, values)
    nc = values.shape[0] - 1
    fig, ax = plt.subplots(figsize=(12, 9), tight_layout=True)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0)
    fig.colorbar(image, ax=ax)
    labels = list(names) + ["background"] if len(names) == nc and nc < 99 else None
    if labels:
        ax.set_xticks(range(nc + 1), labels, rotation=90)
        ax.set_yticks(range(nc + 1), labels)
    if nc < 30:
        colours = text_colours(image.cmap(image.norm(np.nan_to_num(shown))))
        for (i, j), v in np.ndenumerate(shown):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color=colours[i, j])
    title = "Confusion Matrix" + (" Normalized" if normalize else "")
    ax.set(xlabel="True", ylabel="Predicted", title=title)
    return fig


def plot_confusion_matrix(matrix, names, path, *, normalize: bool):
    """Confusion matrix heat map, rows predicted, columns true, last row/column background; cells under 0.005 empty.

    Args:
      matrix: (nc + 1, nc + 1) counts. names: (nc,) class names. path: PNG file. normalize: divide by column sums.
    """
    return _save(confusion_figure(matrix, names, normalize=normalize), path)


def table_ap50(classes, table):
    """The AP50 the table prints for each of `classes` (k,), and its `all` number; (None, None) without a table."""
    if table is None:
        return None, None
    printed = {row["cls"]: row["map50"] for row in table["per_class"]}
    return np.array([printed.get(int(c), np.nan) for c in classes]), float(table["map50"])


def save_all_plots(per_class, matrix, names, save_dir, *, table=None):
    """PR_curve.png, F1_curve.png, P_curve.png, R_curve.png and both confusion matrices into `save_dir`.

    Args:
      per_class: `metrics.ap_per_class` output (or None: curves skipped). matrix: (nc + 1, nc + 1) or None.
      names: (nc,) class names indexed by class id. save_dir: folder.
      table: the `evaluate` result whose numbers the PR legend shows (default: the curves' own AP50).
    Returns:
      list of written paths.
    """
    save_dir = Path(save_dir)
    paths = []
    if per_class is not None and len(per_class["classes"]):
        shown = [names[c] if c < len(names) else str(c) for c in per_class["classes"]]
        px = per_class["px"]
        ap50, mean_ap50 = table_ap50(per_class["classes"], table)
        ap50 = per_class["ap"][:, 0] if ap50 is None else np.where(np.isnan(ap50), per_class["ap"][:, 0], ap50)
        paths.append(plot_pr_curve(px, per_class["pr_curve"], ap50, shown, save_dir / "PR_curve.png",
                                   mean_ap50=mean_ap50))
        for key, label, file in (("f1_curve", "F1", "F1_curve.png"), ("p_curve", "Precision", "P_curve.png"),
                                 ("r_curve", "Recall", "R_curve.png")):
            paths.append(plot_metric_curve(px, per_class[key], shown, save_dir / file, ylabel=label))
    if matrix is not None:
        paths.append(plot_confusion_matrix(matrix, names, save_dir / "confusion_matrix_normalized.png", normalize=True))
        paths.append(plot_confusion_matrix(matrix, names, save_dir / "confusion_matrix.png", normalize=False))
    return paths


# ------------------------------------------------------------------------------------------------- val batches
def to_input_xywh(boxes, gain, pad, hw):
    """Original-image xyxy pixels (b, n, 4) -> normalized xywh (b, n, 4) of the letterboxed input image (the inverse
    of `scale_boxes`, without its clipping). gain: (b,). pad: (b, 2) left, top. hw: the input's (h, w)."""
    boxes = np.asarray(boxes, np.float32) * np.asarray(gain, np.float32)[:, None, None]
    boxes = boxes + np.tile(np.asarray(pad, np.float32), 2)[:, None, :]
    xy, wh = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    return np.concatenate([xy, wh], -1) / np.array([hw[1], hw[0], hw[1], hw[0]], np.float32)


def plot_val_batch(arrays, out, names, save_dir):
    """val_batch0_labels.jpg (ground truth) and val_batch0_pred.jpg (detections scoring above PLOT_CONF) of one
    val batch, drawn on its letterboxed input images.

    Args:
      arrays: the batch as `yolojax.eval.val.val_inputs` gives it: images (b, h, w, 3) uint8 RGB, gt_boxes (b, g, 4)
        xyxy original pixels, gt_cls, gt_mask (b, g), gain (b,), pad (b, 2).
      out: its `val_step` output (host arrays): det_boxes (b, d, 4) xyxy original pixels, det_scores, det_classes,
        det_valid (b, d). names: class names. save_dir: folder.
    Returns:
      the two written paths.
    """
    hw = arrays["images"].shape[1:3]
    gain, pad = arrays["gain"], arrays["pad"]
    labels = dict(images=arrays["images"], bboxes=to_input_xywh(arrays["gt_boxes"], gain, pad, hw),
                  cls=arrays["gt_cls"], mask=np.asarray(arrays["gt_mask"], bool))
    preds = dict(images=arrays["images"], bboxes=to_input_xywh(out["det_boxes"], gain, pad, hw),
                 cls=out["det_classes"], mask=np.asarray(out["det_valid"], bool) & (out["det_scores"] > PLOT_CONF))
    paths = []
    for batch, file in ((labels, "val_batch0_labels.jpg"), (preds, "val_batch0_pred.jpg")):
        paths.append(Path(save_dir) / file)
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(paths[-1]), draw_batch_grid(batch, names)[..., ::-1])
    return paths
