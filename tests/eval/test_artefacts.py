"""The pictures a training run leaves (labels, train and val batches, curves, confusion matrices), the PR legend
against the printed table, and the confusion matrix's legible numbers."""
import dataclasses
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from test_val import MAX_DET, TableTask, make_val_set
from toy import ToyData, ToyTask, toy_batch

from yolojax.eval import plots, val
from yolojax.eval.artefacts import validate_best
from yolojax.train import artefacts
from yolojax.train.config import load_config
from yolojax.train.feed import PipelineData
from yolojax.train.loop import train

RUN_FILES = {"labels.jpg", "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg", "val_batch0_labels.jpg",
             "val_batch0_pred.jpg", "confusion_matrix.png", "confusion_matrix_normalized.png", "PR_curve.png",
             "F1_curve.png", "P_curve.png", "R_curve.png", "results.png"}
CENTRE = (0.5, 0.5, 0.5, 0.5)  # normalized xywh of the box CentreTask detects


@dataclasses.dataclass(frozen=True)
class CentreTask(ToyTask):
    """ToyTask whose detector finds one box per image, the central half of it (score 0.9, class 0)."""

    def predict(self, variables, images, *, conf=0.001, iou=0.7, max_det=300, multi_label=False):
        del variables, conf, iou, multi_label
        b, h, w, _ = images.shape
        box = jnp.array([0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h], jnp.float32)
        valid = jnp.zeros((b, max_det), bool).at[:, 0].set(True)
        return {"boxes": jnp.zeros((b, max_det, 4)).at[:, 0].set(box), "scores": valid * 0.9,
                "classes": jnp.zeros((b, max_det), jnp.int32), "valid": valid}


class LabelledToyData(ToyData):
    """ToyData that lists its train labels (for labels.jpg) and whose first val images hold the central box."""

    def __init__(self):
        super().__init__()
        batch = toy_batch(10_000, self.batch, self.hw)
        batch["bboxes"][:4, 0] = CENTRE
        self.val = [batch]

    def train_labels(self):
        batches = [toy_batch(i) for i in range(self.batches_per_epoch)]
        return (np.concatenate([b["cls"][b["mask"]] for b in batches]),
                np.concatenate([b["bboxes"][b["mask"]] for b in batches]))


def test_a_training_run_leaves_the_reference_pictures(tmp_path):
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=8", "imgsz=32", "nbs=8", "workers=0", "warmup_epochs=0",
                       f"project={tmp_path}", "epochs=1"])
    result = train(cfg, task=CentreTask(), data=LabelledToyData(), evaluate=val.evaluate_ema,
                   final_validation=validate_best, progress=False)
    written = {p.name: p.stat().st_size for p in result.run_dir.iterdir() if p.suffix in (".jpg", ".png")}
    assert set(written) == RUN_FILES and min(written.values()) > 200


def test_training_labels_of_a_yolo_folder_are_its_label_files(shapes_dataset):
    data_yaml = shapes_dataset(8, 4, 64)
    data = PipelineData(load_config(["cfg=none", f"data={data_yaml}", "imgsz=64", "batch=4", "workers=0"]))
    classes, boxes = artefacts.training_labels(data)
    lines = [line.split() for f in sorted((Path(data_yaml).parent / "labels" / "train").glob("*.txt"))
             for line in f.read_text().splitlines() if line.strip()]
    assert sorted(classes.tolist()) == sorted(int(line[0]) for line in lines)
    np.testing.assert_allclose(np.sort(boxes[:, 2]), np.sort([float(line[3]) for line in lines]), atol=1e-6)
    data.close()


def test_pr_legend_shows_the_numbers_of_the_printed_table(tmp_path, monkeypatch):
    legends = {}

    def keep_legend(fig, path):
        legend = fig.axes[0].get_legend()
        legends[Path(path).name] = [t.get_text() for t in legend.get_texts()] if legend else []
        return path
    monkeypatch.setattr(plots, "_save", keep_legend)
    _, table, batches = make_val_set(seed=3, num_images=9)
    lines = []
    result = val.evaluate(TableTask(), table, batches, max_det=MAX_DET, save_dir=tmp_path, plots=True,
                          log=lines.append)
    assert abs(result["ultralytics"]["map50"] - result["map50"]) > 1e-3  # the two modes differ on this set
    printed = re.search(r"^ +all +\d+ +\d+ +\S+ +\S+ +(\S+) ", lines[0], re.M)[1]
    shown = re.search(r"all classes (\S+) mAP@0.5", " ".join(legends["PR_curve.png"]))[1]
    assert float(shown) == round(result["map50"], 3) and abs(float(shown) - float(printed)) < 5e-4
    for row in result["per_class"]:
        assert f"{row['name']} {row['map50']:.3f}" in legends["PR_curve.png"]


def test_confusion_numbers_are_white_on_dark_cells_and_black_on_light_ones():
    matrix = np.array([[90, 3, 0], [2, 40, 1], [1, 5, 0]])
    fig = plots.confusion_figure(matrix, ["a", "b"], normalize=False)
    colours = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colours["90"] == "white" and colours["2"] == "black" and colours["3"] == "black"
    assert list(plots.text_colours([[0.03, 0.19, 0.42, 1.0], [0.97, 0.98, 1.0, 1.0]])) == ["white", "black"]
