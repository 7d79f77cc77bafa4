"""`yolojax predict`: same detections as the reference's predictor (with its class filter and agnostic NMS), the
files it writes, one input shape per source, and boxes back in original-image pixels."""
import json

import jax
import numpy as np
import pytest
from toy import ToyTask

from yolojax.cli.predict import cli_main
from yolojax.data.transforms import letterbox
from yolojax.eval.predict import InputPlan, JaxDetector, NmsOptions, plan_inputs, predict, rect_hw
from yolojax.eval.predict_output import yolo_txt_lines

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
        code = cli_main([str(root / "images"), f"weights={root / 'weights'}", "imgsz=320", "save_txt=true",
                         "save_conf=true", f"save_dir={root / 'out'}"])
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


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:predict. skipping")
def test_class_filter_and_agnostic_nms_as_the_reference(run):
    from ultralytics import YOLO

    ours = predict(run / "images", run / "weights", imgsz=320, classes=[0, 4], agnostic_nms=True)
    model = YOLO(str(run / "ckpt.pt"))
    for pred in ours:
        result = model.predict(pred.path, imgsz=320, conf=0.25, iou=0.7, classes=[0, 4], agnostic_nms=True,
                               verbose=False)[0]
        assert len(pred.boxes) == len(result.boxes) > 5
        assert set(pred.classes.tolist()) <= {0, 4}
        np.testing.assert_allclose(pred.boxes, result.boxes.xyxy.numpy(), atol=1e-3)
        assert pred.classes.tolist() == result.boxes.cls.numpy().astype(int).tolist()


def test_yolo_txt_line_by_hand():
    boxes, scores, classes = np.array([[10.0, 20.0, 50.0, 100.0]]), np.array([0.5]), np.array([3])
    # 200 x 100 (w x h) image: centre (30, 60) -> (0.15, 0.6), size (40, 80) -> (0.2, 0.8)
    assert yolo_txt_lines(boxes, scores, classes, (100, 200)) == ["3 0.15 0.6 0.2 0.8"]
    assert yolo_txt_lines(boxes, scores, classes, (100, 200), save_conf=True) == ["3 0.15 0.6 0.2 0.8 0.5"]


@pytest.mark.parametrize("hw", [(480, 640), (720, 1280), (1080, 810), (375, 500), (33, 1000), (640, 640)])
def test_rect_shape_is_the_letterbox_output_shape(hw):
    image = np.zeros((*hw, 3), np.uint8)
    assert rect_hw(hw, 320) == letterbox(image, (320, 320), auto=True, stride=32)[0].shape[:2]


def test_one_input_shape_per_source():
    assert plan_inputs([(480, 640), (375, 500), None], 640, rect=True) == InputPlan((640, 640), (480, 640))
    assert plan_inputs([(480, 640), (720, 1280)], 640, rect=True) == InputPlan((640, 640))  # mixed: square
    assert plan_inputs([(480, 640)], 640, rect=False) == InputPlan((640, 640))
    assert plan_inputs([(480, 640)], 640, rect=True, fixed_hw=(320, 480)) == InputPlan((320, 480))


class BoxAtInputCorner:
    """A detector whose one box covers the top-left (h/2, w/2) quarter of its input, class 1, score 0.9."""

    names, imgsz, input_hw = ("a", "b"), None, None

    def __call__(self, images, nms):
        b, h, w, _ = images.shape
        boxes = np.zeros((b, nms.max_det, 4), np.float32)
        boxes[:, 0] = [0, 0, w / 2, h / 2]
        valid = np.zeros((b, nms.max_det), bool)
        valid[:, 0] = True
        return {"boxes": boxes, "scores": valid * 0.9, "classes": valid.astype(np.int32), "valid": valid}


def test_boxes_come_back_in_original_pixels():
    # 100 x 200 (h x w) at imgsz 64: gain 0.32, rect input 32 x 64 without padding; the quarter is (0, 0, 32, 16)
    # on the input, (0, 0, 100, 50) on the image. In a square 64 x 64 input the image sits 16 px down.
    tall = np.zeros((100, 200, 3), np.uint8)
    [rect] = predict(tall, BoxAtInputCorner(), imgsz=64)
    np.testing.assert_allclose(rect.boxes, [[0, 0, 100, 50]], atol=1e-4)
    [square] = predict(tall, BoxAtInputCorner(), imgsz=64, rect=False)  # (0, 0, 32, 32) - (0, 16) -> / 0.32
    np.testing.assert_allclose(square.boxes, [[0, 0, 100, 50]], atol=1e-4)
    assert rect.orig_shape == (100, 200) and rect.classes.tolist() == [1] and rect.scores.tolist() == [
        pytest.approx(0.9)]


def test_mixed_sizes_compile_once_and_batches_are_padded(tmp_path):
    task, rng = ToyTask(), np.random.default_rng(0)
    shapes = jax.eval_shape(lambda key: task.init(key, (32, 32)), jax.random.key(0))  # no compile to init
    variables = jax.tree.map(lambda s: rng.uniform(0.1, 1, s.shape).astype(s.dtype), shapes)
    detector = JaxDetector(task, variables, ["thing"])
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
              [(48, 64), (90, 160), (81, 60), (30, 40), (64, 64)]]
    preds = predict(images, detector, imgsz=128, batch=2)  # 5 sizes, 3 rect shapes, batches of 2, 2 and 1
    assert detector.traces == 1
    assert [p.orig_shape for p in preds] == [i.shape[:2] for i in images]
    for pred, image in zip(preds, images):  # the toy's box, mapped back, lies inside its own image
        h, w = image.shape[:2]
        assert (pred.boxes >= 0).all() and (pred.boxes[:, 2] <= w).all() and (pred.boxes[:, 3] <= h).all()
    predict([np.zeros((100, 200, 3), np.uint8)] * 3, detector, imgsz=128, batch=2)  # one size: rect 64 x 128
    assert detector.traces == 2
    predict(images, detector, imgsz=128, batch=2, classes=[0])  # other NMS settings: a new function
    assert detector.traces == 3


def test_nms_settings_reach_the_detector_and_options_are_checked():
    seen = []

    class Recorder(BoxAtInputCorner):
        def __call__(self, images, nms):
            seen.append(nms)
            return super().__call__(images, nms)

    predict(np.zeros((20, 20, 3), np.uint8), Recorder(), conf=0.5, iou=0.6, max_det=7, classes=1,
            agnostic_nms=True, imgsz=32)
    assert seen[-1] == NmsOptions(0.5, 0.6, 7, (1,), True)
    for bad, key in [(dict(classes=[2]), "classes"), (dict(imgsz=50), "imgsz"), (dict(conf=2), "conf"),
                     (dict(batch=0), "batch")]:
        with pytest.raises(ValueError, match=key):
            predict(np.zeros((20, 20, 3), np.uint8), Recorder(), **bad)
