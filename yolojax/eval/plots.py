"""Evaluation plots (matplotlib, Agg): PR curve, F1/P/R-confidence curves, confusion matrices.

Files only: every function takes arrays computed elsewhere (`metrics.ap_per_class`, `confusion`) and writes one PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from yolojax.eval.confusion import normalize_columns
from yolojax.eval.metrics import smooth

LEGEND_MAX_CLASSES = 20


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


def plot_pr_curve(px, pr_curve, ap50, names, path):
    """Precision-recall curves at IoU 0.5.

    Args:
      px: (1000,) recall grid. pr_curve: (k, 1000) precision per class. ap50: (k,) AP at IoU 0.5.
      names: (k,) class names. path: PNG file.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), tight_layout=True)
    if 0 < len(names) <= LEGEND_MAX_CLASSES:
        for name, y, ap in zip(names, pr_curve, ap50):
            ax.plot(px, y, linewidth=1, label=f"{name} {ap:.3f}")
    elif len(names):
        ax.plot(px, np.asarray(pr_curve).T, linewidth=1, color="grey")
    if len(names):
        ax.plot(px, np.mean(pr_curve, 0), linewidth=3, color="blue", label=f"all classes {np.mean(ap50):.3f} mAP@0.5")
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


def plot_confusion_matrix(matrix, names, path, *, normalize: bool):
    """Confusion matrix heat map, rows predicted, columns true, last row/column background.

    Args:
      matrix: (nc + 1, nc + 1) counts. names: (nc,) class names. path: PNG file. normalize: divide by column sums.
    """
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
        for (i, j), v in np.ndenumerate(shown):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8)
    title = "Confusion Matrix" + (" Normalized" if normalize else "")
    ax.set(xlabel="True", ylabel="Predicted", title=title)
    return _save(fig, path)


def save_all_plots(per_class, matrix, names, save_dir):
    """PR_curve.png, F1_curve.png, P_curve.png, R_curve.png and both confusion matrices into `save_dir`.

    Args:
      per_class: `metrics.ap_per_class` output (or None: curves skipped). matrix: (nc + 1, nc + 1) or None.
      names: (nc,) class names indexed by class id. save_dir: folder.
    Returns:
      list of written paths.
    """
    save_dir = Path(save_dir)
    paths = []
    if per_class is not None and len(per_class["classes"]):
        shown = [names[c] if c < len(names) else str(c) for c in per_class["classes"]]
        px = per_class["px"]
        paths.append(plot_pr_curve(px, per_class["pr_curve"], per_class["ap"][:, 0], shown, save_dir / "PR_curve.png"))
        for key, label, file in (("f1_curve", "F1", "F1_curve.png"), ("p_curve", "Precision", "P_curve.png"),
                                 ("r_curve", "Recall", "R_curve.png")):
            paths.append(plot_metric_curve(px, per_class[key], shown, save_dir / file, ylabel=label))
    if matrix is not None:
        paths.append(plot_confusion_matrix(matrix, names, save_dir / "confusion_matrix_normalized.png", normalize=True))
        paths.append(plot_confusion_matrix(matrix, names, save_dir / "confusion_matrix.png", normalize=False))
    return paths
