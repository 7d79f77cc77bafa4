"""Detection on image files: `predict_folder(source, weights, ...)` (what `yolojax predict` runs,
yolojax/cli/predict.py) and its parts.

SOURCE is an image file or a folder of images. For every readable image it writes, under save_dir:
  <name>                 the image with boxes and `class conf` labels drawn
  labels/<stem>.txt      one line per detection: `class cx cy w h conf`, normalized by the image size
  predictions.json       all results: image path, (h, w), and per detection class, name, confidence, xyxy pixels
Preprocessing is the reference predictor's: centred letterbox to imgsz (with rect=True, the padding is reduced to
the next multiple of 32 as the reference does for a single image), BGR -> RGB, / 255; boxes are mapped back to the
original image. weights is a yolojax weights directory, or reference weights (.pt / .safetensors) imported on the
fly (an ultralytics checkpoint also needs trust_pickle). Unreadable images are skipped with a warning.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from yolojax.convert.mapping import infer_scale_and_classes, state_dict_to_variables
from yolojax.convert.sources import load_source
from yolojax.data.labels import IMG_FORMATS
from yolojax.data.transforms import letterbox
from yolojax.detectors import YOLOv8Task, task_from_weights_meta
from yolojax.detectors.postprocess import letterbox_gain_pad, scale_boxes
from yolojax.models.weights import load_weights
from yolojax.models.yolov8 import YOLOv8


# ----------------------------------------------------------------------------------------------- computation
def make_detector(task, *, conf: float, iou: float, max_det: int):
    """Jitted `(variables, images (b, h, w, 3) uint8 RGB) -> detections dict` of the task protocol (any family)."""

    @jax.jit
    def detect(variables, images):
        return task.predict(variables, images, conf=conf, iou=iou, max_det=max_det)

    return detect


def preprocess(image_bgr: np.ndarray, imgsz: int, rect: bool) -> np.ndarray:
    """(h0, w0, 3) uint8 BGR -> (1, h, w, 3) uint8 RGB, letterboxed (h, w multiples of 32)."""

    boxed, _, _ = letterbox(image_bgr, (imgsz, imgsz), auto=rect, stride=32)
    return np.ascontiguousarray(boxed[None, :, :, ::-1])


def detections_on_original(result: dict, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> dict:
    """One image's fixed-size NMS rows -> its valid detections in original-image pixels.

    Returns: boxes (k, 4) xyxy pixels of the original image, scores (k,), classes (k,) int.
    """

    valid = np.asarray(result["valid"])
    gain, pad = letterbox_gain_pad(input_hw, orig_hw)
    boxes = scale_boxes(np.asarray(result["boxes"], np.float32)[valid], orig_hw, gain, pad)
    return {"boxes": boxes, "scores": np.asarray(result["scores"])[valid],
            "classes": np.asarray(result["classes"])[valid].astype(int)}


def yolo_txt_lines(dets: dict, orig_hw: tuple[int, int]) -> list[str]:
    """Detections -> `class cx cy w h conf` lines, box normalized by the original width / height."""
    h0, w0 = orig_hw
    lines = []
    for (x1, y1, x2, y2), score, cls in zip(dets["boxes"], dets["scores"], dets["classes"]):
        cx, cy, w, h = (x1 + x2) / 2 / w0, (y1 + y2) / 2 / h0, (x2 - x1) / w0, (y2 - y1) / h0
        lines.append(f"{cls} {cx:.6g} {cy:.6g} {w:.6g} {h:.6g} {score:.6g}")
    return lines


# ------------------------------------------------------------------------------------------------------ I/O
def load_model_and_weights(weights, *, trust_pickle: bool = False):
    """weights directory (or reference .pt / .safetensors) -> (task, variables, class names, imgsz)."""

    path = Path(weights)
    if path.is_file() and path.suffix in (".pt", ".pth", ".safetensors"):


        state, info = load_source(path, trust_pickle=trust_pickle)
        scale, num_classes = infer_scale_and_classes(state)
        model = YOLOv8(scale, num_classes)
        template = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3))), jax.random.key(0))
        meta = {"names": info.get("names"), "imgsz": None}
        variables = state_dict_to_variables(state, template)
        task = YOLOv8Task(scale=scale, num_classes=num_classes)
    else:

        variables, meta = load_weights(path)
        task = task_from_weights_meta(meta)
    names = list(meta.get("names") or [str(i) for i in range(task.num_classes)])
    return task, variables, names, meta.get("imgsz")


def list_images(source) -> list[Path]:
    """An image file, or the image files of a folder (sorted); a clear error if there are none."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix[1:].lower() in IMG_FORMATS)
        if not files:
            raise FileNotFoundError(f"predict: no images ({', '.join(sorted(IMG_FORMATS))}) in {source}")
        return files
    if source.is_file():
        return [source]
    raise FileNotFoundError(f"predict: source {source} does not exist")


def read_image(path: Path):
    """BGR uint8 image, or None with a warning naming the file when it cannot be decoded."""

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        warnings.warn(f"predict: skipping {path}: not a readable image", stacklevel=2)
    return image


def draw_detections(image_bgr: np.ndarray, dets: dict, names: list[str]) -> np.ndarray:
    """A copy of the image with each box and its `name conf` label drawn."""

    canvas = image_bgr.copy()
    thickness = max(round(sum(canvas.shape[:2]) / 2 * 0.003), 2)
    for box, score, cls in zip(dets["boxes"], dets["scores"], dets["classes"]):
        color = _class_color(int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f"{names[cls] if cls < len(names) else cls} {score:.2f}"
        scale = thickness / 3
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(thickness - 1, 1))
        top = y1 - th - 3 if y1 - th - 3 >= 0 else y1 + th + 3
        cv2.rectangle(canvas, (x1, y1), (x1 + tw, top), color, -1, cv2.LINE_AA)
        cv2.putText(canvas, label, (x1, y1 - 2 if top < y1 else top - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), max(thickness - 1, 1), cv2.LINE_AA)
    return canvas


def _class_color(cls: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(cls)
    return tuple(int(c) for c in rng.integers(40, 230, 3))


def predict_folder(source, weights, *, conf=0.25, iou=0.7, imgsz=None, max_det=300, rect=True,
                   save_dir="runs/predict", trust_pickle=False, log=print) -> list[dict]:
    """Run detection on every image of `source` and write drawings, YOLO txt labels and predictions.json."""

    images = list_images(source)
    task, variables, names, trained_imgsz = load_model_and_weights(weights, trust_pickle=trust_pickle)
    imgsz = imgsz or trained_imgsz or 640  # default: the size the weights were trained at
    if int(imgsz) % 32:
        raise ValueError(f"predict: imgsz={imgsz} must be a multiple of 32")
    detect = make_detector(task, conf=float(conf), iou=float(iou), max_det=int(max_det))
    save_dir = Path(save_dir)
    (save_dir / "labels").mkdir(parents=True, exist_ok=True)
    results = []
    for path in images:
        image = read_image(path)
        if image is None:
            continue
        batch = preprocess(image, int(imgsz), rect)
        out = detect(variables, jnp.asarray(batch))
        dets = detections_on_original({k: v[0] for k, v in out.items()}, batch.shape[1:3], image.shape[:2])
        cv2.imwrite(str(save_dir / path.name), draw_detections(image, dets, names))
        lines = yolo_txt_lines(dets, image.shape[:2])
        (save_dir / "labels" / f"{path.stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        results.append({
            "image": str(path), "shape": list(image.shape[:2]),
            "detections": [{"class": int(c), "name": names[c] if c < len(names) else str(c),
                            "confidence": float(s), "box_xyxy": [float(v) for v in b]}
                           for b, s, c in zip(dets["boxes"], dets["scores"], dets["classes"])],
        })
        log(f"{path}: {len(lines)} detections")
    (save_dir / "predictions.json").write_text(json.dumps(results, indent=1))
    log(f"results saved to {save_dir}")
    return results
