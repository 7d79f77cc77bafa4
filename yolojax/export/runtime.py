"""An exported .onnx file run by ONNX Runtime as a predict detector (`yolojax.eval.predict.Detector`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from yolojax.detectors.postprocess import non_max_suppression
from yolojax.export.metadata import FORMAT_NAME, from_props


class OnnxDetector:
    """An ONNX Runtime session of a yolojax export and its metadata.

    names, imgsz, input_hw: the Detector attributes (input_hw: the exported (h, w), the only size it takes).
    `run(images, conf, iou)` gives the graph's outputs; calling it as a Detector gives predict's NMS rows: the
    graph's own (exports with NMS; at most the exported max_det rows, padded to the asked number) or those of
    `non_max_suppression` over its raw outputs (the same function as our predict).
    """

    def __init__(self, session, metadata: dict):
        self.session, self.metadata = session, metadata
        self.names: tuple[str, ...] = tuple(metadata["names"])
        self.input_hw: tuple[int, int] = (int(metadata["imgsz"][0]), int(metadata["imgsz"][1]))
        self.imgsz: int = max(self.input_hw)
        self.has_nms = metadata.get("nms") is not None
        self.output_names = [o.name for o in session.get_outputs()]
        self._nms: dict[object, Callable] = {}

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, images: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> dict[str, np.ndarray]:
        """The graph on images (n, h, w, 3) uint8 RGB at input_hw, any n (cut into the exported batch size, the last
        part zero-padded): {output name: (n, ...) array}. conf / iou feed the NMS inputs of an NMS export."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (*self.input_hw, 3):
            raise ValueError(f"ONNX model takes (n, {self.input_hw[0]}, {self.input_hw[1]}, 3) uint8 images "
                             f"(exported at imgsz={list(self.input_hw)}), got {tuple(images.shape)}")
        images = np.ascontiguousarray(images, np.uint8)
        batch = self.metadata.get("batch")
        step = len(images) if batch == "dynamic" else int(batch)
        parts = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.uint8)])
            feed = {"images": padded}
            if self.has_nms:
                feed.update(conf=np.array(conf, np.float32), iou=np.array(iou, np.float32))
            parts.append([out[:len(chunk)] for out in self.session.run(self.output_names, feed)])
        return {name: np.concatenate(arrays) for name, arrays in zip(self.output_names, zip(*parts))}

    def supports(self, nms) -> bool:
        """NMS settings (`yolojax.eval.predict.NmsOptions`) it can honour: all without NMS in the graph; with it,
        class-aware NMS only (a class filter is applied to its rows)."""
        return not (self.has_nms and nms.agnostic)

    def __call__(self, images: np.ndarray, nms) -> dict[str, np.ndarray]:
        """Detector call: (b, h, w, 3) uint8 RGB and NmsOptions -> boxes (b, max_det, 4) xyxy pixels, scores,
        classes, valid (b, max_det), numpy, rows in descending score."""
        if not self.has_nms:
            out = self.run(images)
            return {k: np.asarray(v) for k, v in self._nms_function(nms)(out["boxes_xywh"], out["class_probs"]).items()}
        if not self.supports(nms):
            raise ValueError("agnostic NMS: this ONNX model has class-aware NMS in its graph; export it without NMS")
        rows = self.run(images, nms.conf, nms.iou)
        if nms.classes is not None:
            rows = keep_classes(rows, nms.classes)
        return fit_rows(rows, nms.max_det)

    def _nms_function(self, nms) -> Callable:
        key = (nms.conf, nms.iou, nms.max_det, nms.classes, nms.agnostic)
        if key not in self._nms:
            self._nms[key] = jax.jit(lambda boxes, probs: non_max_suppression(
                boxes, probs, conf_thres=nms.conf, iou_thres=nms.iou, max_det=nms.max_det, classes=nms.classes,
                agnostic=nms.agnostic))
        return self._nms[key]


def keep_classes(rows: dict[str, np.ndarray], classes) -> dict[str, np.ndarray]:
    """NMS rows (b, k, ...) with only the rows of `classes` left valid, moved to the front in their order (the
    others zeroed). Class-aware NMS makes this the same kept set as filtering before NMS, up to k rows."""
    valid = rows["valid"] & np.isin(rows["classes"], classes)
    order = np.argsort(~valid, axis=1, kind="stable")
    valid = np.take_along_axis(valid, order, 1)
    out = {"valid": valid}
    for key in ("boxes", "scores", "classes"):
        value = rows[key]
        index = order.reshape(*order.shape, *([1] * (value.ndim - 2)))
        kept = np.take_along_axis(value, index, 1)
        out[key] = np.where(valid.reshape(*valid.shape, *([1] * (value.ndim - 2))), kept, 0).astype(value.dtype)
    return out


def fit_rows(rows: dict[str, np.ndarray], max_det: int) -> dict[str, np.ndarray]:
    """NMS rows (b, k, ...) -> (b, max_det, ...): the first max_det, or zero / False rows appended."""
    fitted = {}
    for key in ("boxes", "scores", "classes", "valid"):
        value = rows[key][:, :max_det]
        missing = max_det - value.shape[1]
        if missing > 0:
            value = np.concatenate([value, np.zeros((value.shape[0], missing, *value.shape[2:]), value.dtype)], 1)
        fitted[key] = value
    return fitted


def default_providers() -> list[str]:
    """CUDA (then CPU) where ONNX Runtime has it, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def load_onnx_detector(path, providers: Sequence[str] | None = None) -> OnnxDetector:
    """An .onnx file written by `yolojax.export.export_model` -> OnnxDetector (providers: ONNX Runtime execution
    providers, default `default_providers()`). FileNotFoundError / ValueError naming the file otherwise."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the runtime's notes on shapes it re-infers
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=list(providers or default_providers()))
    except Exception as err:  # the runtime's own error types: a damaged or foreign file
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None
    metadata = from_props(session.get_modelmeta().custom_metadata_map)
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a yolojax export (metadata format {metadata.get('format')!r}, expected "
                         f"{FORMAT_NAME!r})")
    return OnnxDetector(session, metadata)
