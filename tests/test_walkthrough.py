"""The README's "Fine-tune, validate, predict, export" walkthrough: its commands use keys that exist, and its steps
(CLI, then Python) run end to end at 64 px on a few generated images of a 2-class YOLO-format dataset."""
import importlib.util
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolojax import YOLO
from yolojax.cli import args, convert, predict, train, val
from yolojax.cli.weights import split_trust_pickle
from yolojax.data.shapes import make_shapes_image, yolo_label_rows
from yolojax.train.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Fine-tune, validate, predict, export"
NAMES = {0: "rectangle", 1: "ellipse"}
TINY = ["imgsz=64", "batch=4", "workers=0", "plots=false"]


def walkthrough_commands() -> list[list[str]]:
    """The `yolojax ...` lines of the README section's bash block, as argument lists (comments dropped)."""
    text = README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split("#", 1)[0])[1:] for line in block.splitlines() if line.startswith("yolojax ")]


def test_the_readme_walkthrough_commands_use_existing_keys():
    commands = walkthrough_commands()
    assert [c[0] for c in commands] == ["convert", "train", "val", "predict", "export"]
    for name, *argv in commands:
        if name == "train":
            assignments, positional = args.key_values(argv, train.COMMAND.types)
            trust_pickle, assignments = split_trust_pickle(assignments)
            cfg = load_config(assignments)
            assert not positional and (cfg.model, cfg.weights, cfg.epochs) == ("yolov8s", "yolov8s_jax", 50)
        elif name == "export" and importlib.util.find_spec("yolojax.cli.export") is None:
            continue  # the export command is not part of this tree
        else:
            module = importlib.import_module(f"yolojax.cli.{name}")
            args.parse(module.COMMAND, argv)  # ConfigError on an unknown key or a bad value


def write_dataset(root: Path, num_train=8, num_val=4) -> Path:
    """A 2-class dataset in the YOLO layout (shapes images, triangles left unlabelled) and its yaml."""
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image, cls, boxes = make_shapes_image(np.random.default_rng([7, len(split), i]), imgsz=64)
            keep = cls < len(NAMES)
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            (root / "labels" / split / f"{i}.txt").write_text(yolo_label_rows(cls[keep], boxes[keep],
                                                                               *image.shape[:2]))
    names = "\n".join(f"  {k}: {v}" for k, v in NAMES.items())
    (root / "custom.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return root / "custom.yaml"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The dataset and the reference's 80-class checkpoint (random YOLOv8n weights, a state_dict .pt)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from yolojax.convert.reference import build_reference_model

    root = tmp_path_factory.mktemp("walkthrough")
    data = write_dataset(root / "custom")
    torch.save(build_reference_model("n", 80, seed=0).state_dict(), root / "yolov8n.pt")
    return root, data


@pytest.mark.slow
def test_walkthrough_on_the_command_line(workspace, capsys):
    root, data = workspace
    assert convert.cli_main([str(root / "yolov8n.pt"), str(root / "yolov8n_jax")]) == 0
    assert train.cli_main([f"weights={root / 'yolov8n_jax'}", f"data={data}", "epochs=1", f"project={root}",
                           "name=cli", *TINY]) == 0
    out = capsys.readouterr().out
    assert "Transferred 261/297 items from pretrained weights" in out  # all but the class branch (nc 80 -> 2)
    best = root / "cli" / "weights" / "best"
    assert val.cli_main([f"weights={best}", f"data={data}", f"save_dir={root / 'val'}", *TINY]) == 0
    assert re.search(r"^\s+all\s+4\s", capsys.readouterr().out, re.M)
    assert predict.cli_main([str(root / "custom" / "images" / "val"), f"weights={best}", "imgsz=64",
                             f"save_dir={root / 'predict'}", "save_txt=true"]) == 0
    assert len(list((root / "predict").glob("*.jpg"))) == 4
    if importlib.util.find_spec("yolojax.cli.export") is not None:
        export = importlib.import_module("yolojax.cli.export")
        assert export.cli_main([f"weights={best}", "format=onnx", "imgsz=64"]) == 0


@pytest.mark.slow
def test_walkthrough_in_python(workspace, tmp_path, monkeypatch, capsys):
    root, data = workspace
    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))  # where yolov8n.pt is imported to
    model = YOLO(root / "yolov8n.pt")
    assert (model.model, len(model.names)) == ("yolov8n", 80)
    run = model.train(data=data, epochs=1, project=tmp_path, name="py", imgsz=64, batch=4, workers=0, plots=False)
    assert "Transferred 261/297 items from pretrained weights" in capsys.readouterr().out
    assert run.run_dir == tmp_path / "py" and model.weights == run.run_dir / "weights" / "best"
    assert model.names == NAMES and model.data == str(data)
    metrics = model.val(imgsz=64, batch=4, workers=0, plots=False, save_dir=tmp_path / "val")
    assert 0 <= metrics.map50_95 <= metrics.map50 <= 1
    assert {row["name"] for row in metrics.per_class} <= set(NAMES.values())
    results = model.predict(root / "custom" / "images" / "val", imgsz=64, conf=0.001)
    assert [Path(r.path).name for r in results] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    for result in results:
        assert result.boxes.shape == (len(result.scores), 4) and result.classes.shape == result.scores.shape
        assert np.all(result.boxes[:, 2:] >= result.boxes[:, :2]) and set(result.classes) <= set(NAMES)
    if importlib.util.find_spec("yolojax.export") is not None:
        model.export(format="onnx", imgsz=64, out=str(tmp_path / "model.onnx"))
        assert (tmp_path / "model.onnx").stat().st_size > 0
