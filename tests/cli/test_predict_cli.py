"""`yolojax predict` as the reference's users call it: its switches, sources, run folders and console lines.

The model is a stand-in detector (the Detector protocol of yolojax.eval.predict) so that these tests check the
command, not the network; tests/eval/test_predict.py checks the real model against the reference.
"""
import json

import cv2
import numpy as np
import pytest

from yolojax.cli import predict as predict_cli
from yolojax.eval.predict import NmsOptions, Prediction
from yolojax.eval.predict_output import draw_detections

# three rows per image: (class, score, box as fractions of the input's width / height)
ROWS = [(0, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.6, (0.5, 0.5, 0.9, 0.9)), (1, 0.3, (0.2, 0.6, 0.4, 0.8))]


class StubDetector:
    names, imgsz, input_hw = ("cat", "dog", "owl"), None, None

    def __init__(self):
        self.calls: list[tuple[tuple, NmsOptions]] = []
        self.loaded_onnx: list[str] = []

    def __call__(self, images, nms):
        self.calls.append((images.shape, nms))
        b, h, w, _ = images.shape
        rows = [r for r in ROWS if r[1] > nms.conf and (nms.classes is None or r[0] in nms.classes)][:nms.max_det]
        out = {"boxes": np.zeros((b, nms.max_det, 4), np.float32), "scores": np.zeros((b, nms.max_det), np.float32),
               "classes": np.zeros((b, nms.max_det), np.int32), "valid": np.zeros((b, nms.max_det), bool)}
        for j, (cls, score, box) in enumerate(rows):
            out["boxes"][:, j] = np.array(box) * [w, h, w, h]
            out["scores"][:, j], out["classes"][:, j], out["valid"][:, j] = score, cls, True
        return out


@pytest.fixture
def stub(monkeypatch, tmp_path):
    detector = StubDetector()
    monkeypatch.setattr(predict_cli, "load_jax_detector", lambda weights, trust_pickle=False: detector)
    monkeypatch.setattr(predict_cli, "load_onnx_detector", lambda weights: detector.loaded_onnx.append(weights))
    monkeypatch.setattr(predict_cli, "enable_compilation_cache", lambda: None)
    monkeypatch.chdir(tmp_path)
    return detector


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, hw in {"a.jpg": (60, 80), "b.jpg": (90, 60), "c.png": (50, 50)}.items():
        cv2.imwrite(str(folder / name), np.full((*hw, 3), 90, np.uint8))
    return folder


def predict(*argv):
    return predict_cli.cli_main([*map(str, argv), "weights=w", "imgsz=64"])


def records(run):
    return {r["image"].rsplit("/", 1)[-1] + (f"#{r['frame']}" if r["frame"] else ""): r
            for r in json.loads((run / "predictions.json").read_text())}


def test_bad_value_is_one_line_naming_the_key_and_leaves_no_folder(stub, images, tmp_path, capsys):
    for argv, key in [(["conf=abc"], "conf"), (["classes=[7]"], "classes"), (["imgsz=50"], "imgsz"),
                      (["batch=0"], "batch")]:
        assert predict_cli.cli_main([str(images), "weights=w", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("yolojax predict: ") and key in err and err.count("\n") == 1, err
    assert predict_cli.cli_main([str(tmp_path / "nowhere"), "weights=w"]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_run_folders_are_numbered_and_never_mixed(stub, images, tmp_path):
    assert predict(images) == 0
    assert predict(images / "a.jpg") == 0
    first, second = tmp_path / "runs" / "predict", tmp_path / "runs" / "predict2"
    assert set(records(first)) == {"a.jpg", "b.jpg", "c.png"} and set(records(second)) == {"a.jpg"}
    assert sorted(p.name for p in second.iterdir()) == ["a.jpg", "predictions.json"]
    assert predict(images / "b.jpg", "exist_ok=true") == 0  # written into runs/predict again
    assert set(records(first)) == {"b.jpg"} and not (tmp_path / "runs" / "predict3").exists()
    assert predict(images, "save=false") == 0  # nothing to save: no folder
    assert not (tmp_path / "runs" / "predict3").exists()


def test_save_txt_with_and_without_conf(stub, images, tmp_path):
    assert predict(images / "c.png", "save_txt=true", "save=false") == 0  # 50 x 50: no letterbox padding
    run = tmp_path / "runs" / "predict"
    assert not (run / "c.png").exists() and not (run / "predictions.json").exists()
    lines = (run / "labels" / "c.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "2", "1"]
    np.testing.assert_allclose([float(v) for v in lines[0].split()[1:]], [0.3, 0.3, 0.4, 0.4], atol=1e-4)
    assert predict(images / "a.jpg", "save_txt=true", "save_conf=true", "conf=0.5") == 0
    lines = (tmp_path / "runs" / "predict2" / "labels" / "a.txt").read_text().splitlines()
    assert [float(line.split()[-1]) for line in lines] == [pytest.approx(0.9), pytest.approx(0.6)]
    assert predict(images / "a.jpg", "save_txt=true", "conf=0.95") == 0  # no detection: no label file
    assert not (tmp_path / "runs" / "predict3" / "labels" / "a.txt").exists()


def test_classes_agnostic_and_max_det_reach_the_model(stub, images, tmp_path):
    assert predict(images / "a.jpg", "classes=[1,2]", "agnostic_nms=true", "max_det=1", "conf=0.1", "iou=0.5") == 0
    assert stub.calls[-1][1] == NmsOptions(0.1, 0.5, 1, (1, 2), True)
    dets = records(tmp_path / "runs" / "predict")["a.jpg"]["detections"]
    assert [(d["class"], d["name"]) for d in dets] == [(2, "owl")]
    assert predict(images / "a.jpg", "classes=0") == 0
    assert stub.calls[-1][1].classes == (0,)


def test_onnx_weights_go_to_onnx_runtime(stub, images):
    predict_cli.load_detector("model.ONNX", False)
    predict_cli.load_detector("weights_dir", False)
    assert stub.loaded_onnx == ["model.ONNX"]


def test_glob_and_list_sources(stub, images, tmp_path):
    assert predict(f"{images}/*.jpg") == 0
    assert set(records(tmp_path / "runs" / "predict")) == {"a.jpg", "b.jpg"}
    (tmp_path / "list.txt").write_text("imgs/c.png\nimgs/a.jpg\n")
    assert predict(tmp_path / "list.txt") == 0
    assert set(records(tmp_path / "runs" / "predict2")) == {"a.jpg", "c.png"}


def test_unreadable_file_is_skipped_with_a_warning(stub, images, tmp_path):
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning, match=r"broken\.jpg: not a readable image"):
        assert predict(images) == 0
    assert set(records(tmp_path / "runs" / "predict")) == {"a.jpg", "b.jpg", "c.png"}


def test_video_gives_an_annotated_video_and_a_label_file_per_frame(stub, tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (80, 48))
    for i in range(3):
        writer.write(np.full((48, 80, 3), 60 * i, np.uint8))
    writer.release()
    assert predict(tmp_path / "clip.mp4", "save_txt=true") == 0
    run = tmp_path / "runs" / "predict"
    assert sorted(p.name for p in (run / "labels").iterdir()) == ["clip_1.txt", "clip_2.txt", "clip_3.txt"]
    capture = cv2.VideoCapture(str(run / "clip.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (80, 48)
    capture.release()
    assert set(records(run)) == {"clip.mp4#1", "clip.mp4#2", "clip.mp4#3"}


def test_speed_line_and_batches(stub, images, capsys):
    assert predict(images, "batch=2", "rect=false") == 0
    out = capsys.readouterr().out.splitlines()
    assert [shape for shape, _ in stub.calls] == [(2, 64, 64, 3)] * 3  # a warm-up, then 2 + 1 (padded) images
    speed = [line for line in out if line.startswith("Speed: ")]
    assert len(speed) == 1 and speed[0].endswith("per image at shape (2, 3, 64, 64)")
    assert "ms preprocess, " in speed[0] and "ms inference, " in speed[0] and "ms postprocess" in speed[0]
    assert any(line.endswith("a.jpg: 64x64 1 cat, 1 dog, 1 owl, " + line.rsplit(", ", 1)[-1]) for line in out)


def test_line_width_sets_the_box_thickness():
    pred = Prediction("x.jpg", None, (200, 100), np.array([[20.0, 30.0, 80.0, 190.0]], np.float32),
                      np.array([0.5], np.float32), np.array([0]), ("cat",), {})
    blank = np.zeros((200, 100, 3), np.uint8)
    widths = (1, 4, 7)
    drawn = [draw_detections(blank, pred, line_width=w)[150, :50].any(axis=-1).sum() for w in widths]
    assert all(w <= d <= w + 4 for w, d in zip(widths, drawn))  # a row across the left edge; antialiasing adds
    assert drawn[0] < drawn[1] < drawn[2]                         # up to 2 px a side
