"""Run-directory I/O of training: the run folder, results.csv, results.png, TensorBoard. No computation here."""
from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from yolojax.train.optim import GROUP_BIAS, GROUP_DECAY, GROUP_NORM

# results.csv has the reference trainer's columns, in its order (ultralytics engine/trainer.py `save_metrics`):
# epoch, train losses, the validator's four metrics, val losses, then the lr of each optimizer param group in the
# reference's group order (pg0 biases, pg1 decayed weights, pg2 norm weights); columns of ours alone come after.
REFERENCE_METRICS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)")
LR_GROUPS = (GROUP_BIAS, GROUP_DECAY, GROUP_NORM)  # our group of the reference's pg0, pg1, pg2


def lr_columns(lr) -> dict[str, float]:
    """Per-group learning rates in our group order (yolojax.train.optim: decay, norm, bias) -> {"lr/pg0": ...}
    named as the reference's param groups."""
    return {f"lr/pg{j}": float(lr[group]) for j, group in enumerate(LR_GROUPS)}


def results_row(epoch: int, loss_names, losses, metrics: Mapping[str, Any], lr, seconds: float) -> dict:
    """One results.csv row: 1-based epoch, the epoch's mean train losses (None: no finite step), the evaluator's
    scalar metrics, the lr of each group at the epoch's last iteration and the epoch's seconds."""
    row: dict[str, Any] = {"epoch": epoch + 1}
    if losses is not None:
        row.update({f"train/{n}_loss": float(v) for n, v in zip(loss_names, losses)})
    row.update({k: float(v) for k, v in metrics.items() if np.isscalar(v) or np.ndim(v) == 0})
    row.update(lr_columns(lr))
    row["time/epoch_s"] = float(seconds)
    return row


def results_columns(row: Mapping[str, Any]) -> list[str]:
    """The results.csv header for a row: the reference's columns (those it lacks included, for the row's loss
    names), then the row's other columns in their order."""
    losses = [k[len("train/"):] for k in row if k.startswith("train/") and k.endswith("_loss")]
    reference = ["epoch", *[f"train/{n}" for n in losses], *REFERENCE_METRICS, *[f"val/{n}" for n in losses],
                 "lr/pg0", "lr/pg1", "lr/pg2"]
    return reference + [k for k in row if k not in reference]


def new_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """project/name, or project/name2, name3, ... when it exists (unless exist_ok). Created."""
    base = Path(project) / name
    path, n = base, 2
    while path.exists() and not exist_ok:
        path, n = base.with_name(f"{name}{n}"), n + 1
    path.mkdir(parents=True, exist_ok=True)
    return path.absolute()


def save_args(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    (run_dir / "args.yaml").write_text(yaml.safe_dump(dict(cfg), sort_keys=False))


def load_args(run_dir: Path) -> dict:
    path = run_dir / "args.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; cannot resume a run without its saved config")
    return yaml.safe_load(path.read_text())


def append_results(path: Path, row: Mapping[str, Any]) -> None:
    """Append one epoch's row to results.csv. The first row fixes the header (`results_columns`); a later row is
    written under it, its absent columns as nan (keys the header lacks are dropped)."""
    new = not path.exists()
    if new:
        columns = results_columns(row)
    else:
        with path.open(newline="") as f:
            columns = next(csv.reader(f))
    cells = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="nan", extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(cells)


def read_results(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_results(csv_path: Path, out_path: Path) -> Path | None:
    """One small panel per column of results.csv against epoch; returns the PNG path (None if no rows)."""
    rows = read_results(csv_path)
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k != "epoch" and not all(math.isnan(r[k]) for r in rows)]
    cols = min(5, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [r[key] for r in rows], marker=".", linewidth=1.5)
        ax.set_title(key, fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


class TensorBoard:
    """Scalar logger over tensorboardX or torch.utils.tensorboard; warns once and does nothing if neither exists."""

    def __init__(self, log_dir: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                warnings.warn(f"{log_dir}: tensorboard=True but no TensorBoard writer is installed ({err}); "
                              "pip install tensorboardX")
                return
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(re.sub(r"[()]", "", key), value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
