"""`yolojax export`: ONNX Runtime and reloaded StableHLO give our forward and NMS; metadata; one-line errors."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from yolojax.cli.export import cli_main
from yolojax.detectors import FasterRCNNTask, YOLOv8Task
from yolojax.detectors.postprocess import non_max_suppression
from yolojax.eval.predict import NmsOptions, load_jax_detector
from yolojax.export import export_model, load_onnx_detector, load_stablehlo
from yolojax.export.graph import NMS_TILE, num_anchors
from yolojax.models.weights import save_weights

pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")

NAMES = ["disc", "square", "star"]
IMGSZ = 64
TASK = YOLOv8Task(scale="n", num_classes=len(NAMES))


def trained_like_variables(seed: int = 0) -> dict:
    """YOLOv8n variables drawn directly (no init run): convolutions at 2.2x PyTorch's default scale (so that scores
    differ between anchors), BatchNorm statistics and scales far from the identity (as after training: folding
    BatchNorm into the convolutions is then not a no-op), class biases that let some dozens of boxes through 0.05."""
    shapes = jax.eval_shape(lambda key: TASK.init(key, (IMGSZ, IMGSZ)), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = jax.tree_util.keystr(path), leaf.shape
        if name.endswith("['kernel']"):
            bound = 2.2 / np.sqrt(np.prod(shape[:-1]))
            value = rng.uniform(-bound, bound, shape)
        elif "cv3" in name and "'bn'" not in name:  # the class branch's last conv bias
            value = rng.normal(0, 1, shape) - 2
        elif name.endswith("['mean']") or name.endswith("['bias']"):
            value = rng.normal(0, 0.5, shape)
        else:  # BatchNorm scale, var; the box branch's last conv bias
            value = rng.uniform(0.5, 1.5, shape)
        return value.astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, IMGSZ, IMGSZ, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    save_weights(root / "weights", trained_like_variables(), {"scale": "n", "num_classes": 3, "names": NAMES,
                                                              "imgsz": IMGSZ})
    return root


@pytest.fixture(scope="module")
def raw_onnx(root):
    """Exported through the CLI: the graph ends at boxes and class probabilities, dynamic batch."""
    assert cli_main([f"weights={root / 'weights'}", f"imgsz={IMGSZ}", "batch=dynamic", f"out={root / 'raw.onnx'}"]) == 0
    return root / "raw.onnx"


@pytest.fixture(scope="module")
def nms_onnx(root):
    return export_model(root / "weights", imgsz=IMGSZ, batch="dynamic", nms=True, max_det=40, out=root / "nms.onnx")


def variables_of(root):
    return load_jax_detector(root / "weights").variables


def test_half_export_runs_and_tracks_the_float32_export(root, raw_onnx):
    """half=True computes in float16 (the stem reshaped for cuDNN, as in training); outputs stay float32."""
    half = export_model(root / "weights", imgsz=IMGSZ, batch=1, half=True, out=root / "half.onnx")
    batch = images(1)
    runs = [load_onnx_detector(path, providers=["CPUExecutionProvider"]).session for path in (raw_onnx, half)]
    full, low = ([np.asarray(o) for o in run.run(None, {run.get_inputs()[0].name: batch})] for run in runs)
    for a, b in zip(full, low):
        assert b.dtype == np.float32
        assert float(np.abs(a - b).max() / np.abs(a).max()) < 1e-2  # seen 3e-4 (boxes), 2e-3 (probabilities)


def test_onnx_runtime_gives_our_forward(root, raw_onnx):
    detector = load_onnx_detector(raw_onnx, providers=["CPUExecutionProvider"])
    batch = images(3)
    ours = TASK.model.apply(variables_of(root), batch / 255.0, train=False)
    theirs = detector.run(batch)
    for name, expected in zip(("boxes_xywh", "class_probs"), ours):
        expected = np.asarray(expected)
        np.testing.assert_allclose(theirs[name], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max(), err_msg=name)


def test_nms_in_the_graph_keeps_our_detections(root, nms_onnx):
    detector = load_onnx_detector(nms_onnx, providers=["CPUExecutionProvider"])
    batch = images(3, seed=2)
    ours = {k: np.asarray(v) for k, v in TASK.predict(variables_of(root), batch, conf=0.05, iou=0.6,
                                                       max_det=40).items()}
    theirs = detector.run(batch, conf=0.05, iou=0.6)
    assert 0 < ours["valid"].sum() < ours["valid"].size  # some kept, some rows empty: the mask is exercised
    np.testing.assert_array_equal(theirs["valid"], ours["valid"])
    np.testing.assert_array_equal(theirs["classes"], ours["classes"])
    np.testing.assert_allclose(theirs["boxes"], ours["boxes"], atol=1e-3)
    np.testing.assert_allclose(theirs["scores"], ours["scores"], atol=1e-5)
    stricter = detector.run(batch, conf=0.3, iou=0.6)  # the thresholds are inputs of the graph
    assert stricter["valid"].sum() < theirs["valid"].sum()
    assert stricter["scores"][stricter["valid"]].min() > 0.3


def test_nms_in_the_graph_with_more_anchors_than_one_nms_tile(root):
    imgsz = 160
    assert num_anchors((imgsz, imgsz)) > NMS_TILE  # 525 anchors: the scanned rows differ from a tile's
    path = export_model(root / "weights", imgsz=imgsz, nms=True, out=root / "nms160.onnx")
    detector = load_onnx_detector(path, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(5).integers(0, 256, (1, imgsz, imgsz, 3), dtype=np.uint8)
    boxes_xywh, class_probs = TASK.model.apply(variables_of(root), batch / 255.0, train=False)
    assert (np.asarray(class_probs).max(-1) > 0.05).sum() > NMS_TILE  # candidates over two tiles
    ours = {k: np.asarray(v) for k, v in non_max_suppression(boxes_xywh, class_probs, conf_thres=0.05,
                                                               iou_thres=0.6, max_det=300).items()}
    theirs = detector.run(batch, conf=0.05, iou=0.6)
    assert 0 < ours["valid"].sum() < ours["valid"].size
    np.testing.assert_array_equal(theirs["valid"], ours["valid"])
    np.testing.assert_array_equal(theirs["classes"], ours["classes"])
    np.testing.assert_allclose(theirs["boxes"], ours["boxes"], rtol=1e-5, atol=2e-3)
    np.testing.assert_allclose(theirs["scores"], ours["scores"], atol=1e-5)
    declared = [o.shape for o in detector.session.get_outputs()]
    assert declared == [list(theirs[name].shape) for name in ("boxes", "scores", "classes", "valid")]


@pytest.fixture(scope="module")
def jax_rows(root):
    """Our predict's detector on the batch of the detector test."""
    return load_jax_detector(root / "weights")(images(2, seed=3), PREDICT_NMS)


PREDICT_NMS = NmsOptions(conf=0.1, iou=0.7, max_det=50, classes=(0, 2))


@pytest.mark.parametrize("graph", ["raw", "nms"])
def test_onnx_detector_fits_predict_and_carries_metadata(raw_onnx, nms_onnx, jax_rows, graph):
    detector = load_onnx_detector(raw_onnx if graph == "raw" else nms_onnx, providers=["CPUExecutionProvider"])
    assert detector.names == tuple(NAMES) and detector.input_hw == (IMGSZ, IMGSZ)
    meta = detector.metadata
    assert meta["opset"] == 17 and meta["batch"] == "dynamic" and meta["stride"] == 32
    assert meta["model"] == {"family": "yolov8", "scale": "n"} and meta["letterbox"]["color"] == [114] * 3
    assert all(output.shape[0] == "batch" for output in detector.session.get_outputs())
    theirs, ours = detector(images(2, seed=3), PREDICT_NMS), jax_rows
    assert theirs["boxes"].shape == (2, 50, 4) and ours["valid"].any()
    assert set(ours["classes"][ours["valid"]]) <= {0, 2}
    np.testing.assert_array_equal(theirs["valid"], ours["valid"])
    np.testing.assert_array_equal(theirs["classes"], ours["classes"])
    np.testing.assert_allclose(theirs["boxes"], ours["boxes"], atol=1e-3)


RELOAD = """
import sys, numpy as np
from jax import export
exported = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))  # jax alone, no yolojax
np.savez(sys.argv[2], *exported.call(np.load(sys.argv[2] + ".npy"), np.float32(0.05), np.float32(0.6)))
"""


def test_stablehlo_reloads_in_a_fresh_process(root):
    path = export_model(root / "weights", format="stablehlo", imgsz=IMGSZ, batch="dynamic", nms=True, max_det=40,
                        out=root / "model.stablehlo")
    meta = json.loads((root / "model.json").read_text())
    assert meta["names"] == NAMES and meta["outputs"] == ["boxes", "scores", "classes", "valid"]
    exported, _ = load_stablehlo(path)
    assert str(exported.in_avals[0].shape[0]) == "b"  # a symbolic batch
    batch = images(2, seed=4)
    np.save(root / "out.npy", batch)
    subprocess.run([sys.executable, "-c", RELOAD, str(path), str(root / "out")], check=True,
                   env={"JAX_PLATFORMS": "cpu"})
    fresh = np.load(root / "out.npz")
    for i, value in enumerate(exported.call(batch, np.float32(0.05), np.float32(0.6))):
        np.testing.assert_array_equal(fresh[f"arr_{i}"], np.asarray(value))
    ours = TASK.predict(variables_of(root), batch, conf=0.05, iou=0.6, max_det=40)
    assert np.asarray(ours["valid"]).any()
    np.testing.assert_array_equal(fresh["arr_3"], np.asarray(ours["valid"]))
    np.testing.assert_allclose(fresh["arr_0"], np.asarray(ours["boxes"]), atol=1e-3)


@pytest.mark.parametrize("argv, names", [
    (["format=tflite"], "format"),
    (["opset=7"], "opset"),
    (["imgsz=100"], "imgsz"),
    (["batch=0"], "batch"),
    (["format=stablehlo", "opset=17"], "opset"),
    ([], "weights"),
])
def test_cli_mistakes_are_one_line_with_exit_2(root, capsys, argv, names):
    weights = [f"weights={root / 'weights'}"] if names != "weights" else ["weights=nowhere/best"]
    assert cli_main(weights + argv + [f"out={root / 'never.onnx'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("yolojax export:") and names in err
    assert not (root / "never.onnx").exists()


def test_two_stage_weights_are_refused_in_one_line(tmp_path, capsys):
    spec = FasterRCNNTask(num_classes=2, backbone="tiny").spec()  # refused on its metadata: any arrays do
    save_weights(tmp_path / "frcnn", {"params": {"w": np.zeros(1)}},
                 {"scale": "n", "num_classes": 2, "model_config": spec})
    assert cli_main([f"weights={tmp_path / 'frcnn'}", f"out={tmp_path / 'm.onnx'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "faster_rcnn" in err
