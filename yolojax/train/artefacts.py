"""Pictures a training run leaves in its folder (with cfg `plots`): labels.jpg, the label statistics of the train
split, drawn before the first step; train_batch0..2.jpg, the first augmented batches, copied as they pass and
drawn once the first epoch's steps are done (never between steps). Files only: nothing here computes for the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolojax.data.preview import class_colour, draw_batch_grid

SAMPLE_BATCHES = 3
LABELS_DRAWN = 500  # boxes outlined in the box-shape panel


# ---------------------------------------------------------------------------------------------------- labels.jpg
def training_labels(data: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(classes (n,) int, boxes (n, 4) normalized xywh) of every box in the train split, or None when the data does
    not list its labels (`data.train_labels()` if it has one, else the records of a file source)."""
    if callable(getattr(data, "train_labels", None)):
        return data.train_labels()
    source = getattr(getattr(data, "train", None), "source", None)
    records = getattr(source, "records", None)
    if records is None:
        return None
    records = records[:getattr(data, "train_size", len(records))]
    classes = np.concatenate([np.asarray(r["cls"], np.int64).reshape(-1) for r in records] or [np.zeros(0, int)])
    boxes = np.concatenate([np.asarray(r["bboxes"], np.float32).reshape(-1, 4) for r in records]
                           or [np.zeros((0, 4), np.float32)])
    return classes, boxes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def box_shapes_image(classes: np.ndarray, boxes: np.ndarray, size: int = 1000) -> np.ndarray:
    """White (size, size, 3) uint8 RGB image with the first LABELS_DRAWN boxes outlined, all centred, in their
    class colour: the spread of box shapes."""
    canvas = np.full((size, size, 3), 255, np.uint8)
    for c, (_, _, w, h) in zip(classes[:LABELS_DRAWN], boxes[:LABELS_DRAWN]):
        p1 = (int((0.5 - w / 2) * size), int((0.5 - h / 2) * size))
        p2 = (int((0.5 + w / 2) * size), int((0.5 + h / 2) * size))
        cv2.rectangle(canvas, p1, p2, class_colour(int(c)), 1)
    return canvas


def saturation_count(x: np.ndarray, y: np.ndarray, bins: int = 50) -> float:
    """The 90th percentile of the non-empty cells' counts of a (bins, bins) histogram over [0, 1]^2: darker cells
    all look alike, so a few dense cells do not wash out the rest (as the reference's pmax=0.9)."""
    counts = np.histogram2d(x, y, bins=bins, range=((0, 1), (0, 1)))[0]
    return max(1.0, float(np.percentile(counts[counts > 0], 90)))


def plot_labels(classes: np.ndarray, boxes: np.ndarray, names: Any, path: Path) -> Path:
    """labels.jpg: instances per class, box shapes, box centres (x, y) and sizes (width, height) as 2-D histograms.

    Args:
      classes: (n,) int class ids. boxes: (n, 4) normalized xywh. names: class names (index = id). path: the file.
    """
    plt = _pyplot()
    nc = max(len(names), int(classes.max()) + 1 if len(classes) else 0)
    fig, axes = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    counts = np.bincount(classes, minlength=nc)
    axes[0, 0].bar(range(nc), counts, width=0.8, color=[np.array(class_colour(c)) / 255 for c in range(nc)])
    axes[0, 0].set_ylabel("instances")
    if 0 < len(names) < 30:
        axes[0, 0].set_xticks(range(len(names)), list(names), rotation=90, fontsize=10)
    else:
        axes[0, 0].set_xlabel("classes")
    axes[0, 1].imshow(box_shapes_image(classes, boxes))
    axes[0, 1].axis("off")
    for ax, (i, j), (xl, yl) in ((axes[1, 0], (0, 1), ("x", "y")), (axes[1, 1], (2, 3), ("width", "height"))):
        if len(boxes):
            ax.hist2d(boxes[:, i], boxes[:, j], bins=50, range=((0, 1), (0, 1)), cmap="Blues", cmin=1, vmin=0,
                      vmax=saturation_count(boxes[:, i], boxes[:, j]))
        ax.set(xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1))
    for ax in axes.flat:
        for side in ("top", "right", "left", "bottom"):
            ax.spines[side].set_visible(False)
    path = Path(path)
    fig.savefig(path, dpi=200)
    plt.close(fig)
    return path


def write_labels_plot(data: Any, path: Path) -> Path | None:
    """labels.jpg of the train split of `data` (a TrainData); None when its labels are not listed."""
    labels = training_labels(data)
    return plot_labels(*labels, data.names, path) if labels is not None else None


# ------------------------------------------------------------------------------------------------ train batches
class BatchSamples:
    """Copies of the run's first SAMPLE_BATCHES train batches (host arrays, this process's rows), kept as they pass
    through the feed and drawn to train_batch{i}.jpg by `write` (after the steps)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.batches: dict[int, dict] = {}

    def keep(self, iteration: int, batch: dict) -> None:
        if self.enabled and iteration < SAMPLE_BATCHES and iteration not in self.batches:
            self.batches[iteration] = {k: np.array(v) for k, v in batch.items() if isinstance(v, np.ndarray)}

    def write(self, run_dir: Path, names: Any) -> list[Path]:
        """Draw the kept batches (then dropped) as run_dir/train_batch{i}.jpg."""
        paths = []
        for i, batch in sorted(self.batches.items()):
            paths.append(Path(run_dir) / f"train_batch{i}.jpg")
            cv2.imwrite(str(paths[-1]), draw_batch_grid(batch, names)[..., ::-1])
        self.batches.clear()
        return paths
