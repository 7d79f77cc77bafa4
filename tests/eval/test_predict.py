"""`yolojax predict`: same detections as the reference's predictor, and the files it writes."""
import json

import numpy as np
import pytest

from yolojax.cli.predict import cli_main
from yolojax.eval.predict import yolo_txt_lines

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("ultralytics")

NAMES = ["cat", "dog", "cow", "owl", "eel"]
IMAGE_SHAPES = {"a.png": (300, 400), "b.jpg": (210, 280)}  # both letterbox to 256x320: one compile


def reference_checkpoint(path):
    """An ultralytics checkpoint of a random YOLOv8n whose predictions depend on the image.

    Convolutions are scaled up 2.2x (from PyTorch's default init) so that the signal survives the depth and scores
    differ between anchors (no exact ties); class biases are set so that some hundred boxes pass conf 0.25.
    """
    from yolojax.convert.reference import build_reference_model

    model = build_reference_model("n", len(NAMES), seed=1)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.weight.requires_grad:
                module.weight.mul_(2.2)
        for level in range(3):
            model.model[22].cv3[level][2].bias.copy_(torch.randn(len(NAMES), generator=generator) - 3)
    model.names = dict(enumerate(NAMES))
    torch.save({"model": model}, path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    reference_checkpoint(root / "ckpt.pt")
    from yolojax.cli.convert import cli_main as convert_main

    assert convert_main([str(root / "ckpt.pt"), str(root / "weights"), "--trust-pickle"]) == 0
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for name, shape in IMAGE_SHAPES.items():
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    (root / "images" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match=r"broken\.jpg: not a readable image"):
        code = cli_main([str(root / "images"), f"weights={root / 'weights'}", "imgsz=320",
                         f"save_dir={root / 'out'}"])
    assert code == 0
    return root


@pytest.mark.parity
def test_same_detections_as_reference_predictor(run):
    from ultralytics import YOLO

    ours = {r["image"].split("/")[-1]: r for r in json.loads((run / "out" / "predictions.json").read_text())}
    assert set(ours) == set(IMAGE_SHAPES)  # the broken file was skipped, the others processed
    # one image per call, as the reference's folder source runs: the letterbox then has minimal (rect) padding
    model = YOLO(str(run / "ckpt.pt"))
    reference = [model.predict(str(run / "images" / name), imgsz=320, conf=0.25, iou=0.7, verbose=False)[0]
                 for name in IMAGE_SHAPES]
    for result in reference:
        dets = ours[result.path.split("/")[-1]]["detections"]
        assert len(dets) == len(result.boxes) > 20
        np.testing.assert_allclose([d["box_xyxy"] for d in dets], result.boxes.xyxy.numpy(), atol=1e-3)
        np.testing.assert_allclose([d["confidence"] for d in dets], result.boxes.conf.numpy(), atol=1e-5)
        assert [d["class"] for d in dets] == result.boxes.cls.numpy().astype(int).tolist()
        assert [d["name"] for d in dets] == [NAMES[c] for c in result.boxes.cls.numpy().astype(int)]


def test_writes_drawings_and_txt_labels_consistent_with_json(run):
    results = json.loads((run / "out" / "predictions.json").read_text())
    for result in results:
        name = result["image"].split("/")[-1]
        drawn = cv2.imread(str(run / "out" / name))
        assert drawn.shape[:2] == tuple(result["shape"]) == IMAGE_SHAPES[name]
        lines = (run / "out" / "labels" / f"{name.rsplit('.', 1)[0]}.txt").read_text().splitlines()
        assert len(lines) == len(result["detections"])
        h, w = result["shape"]
        first, det = [float(v) for v in lines[0].split()], result["detections"][0]
        x1, y1, x2, y2 = det["box_xyxy"]
        np.testing.assert_allclose(first, [det["class"], (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w,
                                           (y2 - y1) / h, det["confidence"]], rtol=1e-5)


def test_yolo_txt_line_by_hand():
    dets = {"boxes": np.array([[10.0, 20.0, 50.0, 100.0]]), "scores": np.array([0.5]), "classes": np.array([3])}
    # 200 x 100 (w x h) image: centre (30, 60) -> (0.15, 0.6), size (40, 80) -> (0.2, 0.8)
    assert yolo_txt_lines(dets, (100, 200)) == ["3 0.15 0.6 0.2 0.8 0.5"]


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert cli_main([str(tmp_path / "nowhere"), f"weights={tmp_path}"]) == 1
    assert "nowhere" in capsys.readouterr().err
