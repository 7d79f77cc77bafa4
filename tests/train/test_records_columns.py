"""results.csv: the reference trainer's columns in its order, lr/pg named as its param groups."""
import csv
import math

import numpy as np
import pytest

from yolojax.train import records
from yolojax.train.config import load_config
from yolojax.train.optim import GROUP_BIAS, GROUP_DECAY, GROUP_NORM, hyper_at, plan_optimizer

# ultralytics 8.2.103 results.csv header of a detection run (engine/trainer.py save_metrics), names stripped
REFERENCE_HEADER = ["epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
                    "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss", "val/cls_loss",
                    "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2"]


def _header(path):
    with path.open(newline="") as f:
        return next(csv.reader(f))


def detection_row(epoch=1, with_metrics=True):
    row = {"epoch": epoch, "train/box_loss": 1.5, "train/cls_loss": 2.5, "train/dfl_loss": 1.2}
    if with_metrics:
        row.update({"metrics/precision(B)": 0.5, "metrics/recall(B)": 0.4, "metrics/mAP50(B)": 0.3,
                    "metrics/mAP50-95(B)": 0.2, "fitness": 0.21})
    row.update(records.lr_columns(np.float32([0.01, 0.02, 0.03])))
    row["time/epoch_s"] = 12.0
    return row


def test_header_is_the_reference_s_then_our_extra_columns(tmp_path):
    path = tmp_path / "results.csv"
    records.append_results(path, detection_row())
    assert _header(path) == REFERENCE_HEADER + ["fitness", "time/epoch_s"]
    row = records.read_results(path)[0]
    assert math.isnan(row["val/box_loss"])  # a column the row does not fill is written as nan
    assert row["metrics/mAP50(B)"] == pytest.approx(0.3)


def test_reference_reader_sees_the_same_columns(tmp_path):
    """The reference's own reader (BaseTrainer.read_results_csv: pandas, names stripped) on our file."""
    pd = pytest.importorskip("pandas")
    path = tmp_path / "results.csv"
    records.append_results(path, detection_row())
    assert [k.strip() for k in pd.read_csv(path).columns][:len(REFERENCE_HEADER)] == REFERENCE_HEADER


def test_lr_columns_follow_the_reference_s_param_groups():
    """Its build_optimizer makes the optimizer on the biases (pg0), then adds decayed weights (pg1) and the
    BatchNorm weights (pg2)."""
    lr = np.zeros(3, np.float32)
    lr[GROUP_BIAS], lr[GROUP_DECAY], lr[GROUP_NORM] = 0.1, 0.2, 0.3
    assert records.lr_columns(lr) == pytest.approx({"lr/pg0": 0.1, "lr/pg1": 0.2, "lr/pg2": 0.3})


@pytest.mark.parity
def test_lr_columns_equal_the_reference_optimizer_groups_during_warmup():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = BaseTrainer.build_optimizer(SimpleNamespace(args=None), model, name="SGD", lr=0.01, momentum=0.9,
                                            decay=5e-4)
    kinds = []
    for group in optimizer.param_groups:  # which of the model's tensors each reference group holds
        names = {id(p): n for n, p in model.named_parameters()}
        kinds.append({names[id(p)] for p in group["params"]})
    assert kinds == [{"0.bias", "1.bias"}, {"0.weight"}, {"1.weight"}]
    # the warmup gives the bias group its own lr: the column that carries it must be pg0
    plan = plan_optimizer(load_config(["cfg=none", "optimizer=SGD"]), num_classes=1, dataset_size=64,
                          batches_per_epoch=4)
    columns = records.lr_columns(hyper_at(plan, 10, 0).lr)
    assert columns["lr/pg0"] > 0.05 and columns["lr/pg1"] == columns["lr/pg2"] < 0.01


def test_later_rows_keep_the_first_header_and_fill_gaps(tmp_path):
    path = tmp_path / "results.csv"
    records.append_results(path, detection_row(1, with_metrics=False))  # an epoch without validation first
    records.append_results(path, detection_row(2))
    assert _header(path) == REFERENCE_HEADER + ["time/epoch_s"]
    first, second = records.read_results(path)
    assert math.isnan(first["metrics/mAP50(B)"]) and second["metrics/mAP50(B)"] == pytest.approx(0.3)
    assert second["lr/pg2"] == pytest.approx(0.02) and second["epoch"] == 2  # norm weights: our group 1


def test_plot_skips_columns_without_values(tmp_path):
    import matplotlib.image

    path = tmp_path / "results.csv"
    row = detection_row(with_metrics=False)
    del row["time/epoch_s"]
    records.append_results(path, row)  # 6 columns with values, 7 of nan: 2 rows of 5 panels, not 3
    image = matplotlib.image.imread(records.plot_results(path, tmp_path / "results.png"))
    assert image.shape[0] == round(2.6 * 2 * 120)
