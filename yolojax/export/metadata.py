"""What travels with an exported model: class names, input size and convention, model, graph contents.

Stored as ONNX `metadata_props` (each value JSON-encoded) or as a JSON file beside a StableHLO artefact.
"""
from __future__ import annotations

import json

FORMAT_NAME = "yolojax-export"
FORMAT_VERSION = 1
STRIDE = 32
LETTERBOX = {"resize": "keep aspect ratio, scale = min(h / h0, w / w0) (up and down)",
             "pad": "centred: left = round((w - w0 * scale) / 2 - 0.1), top likewise", "color": [114, 114, 114],
             "input": "uint8 RGB NHWC, 0-255 (the graph divides by 255)"}


def export_metadata(task, names, *, image_hw, batch, half: bool, nms: bool, max_det: int, fmt: str,
                    outputs, opset=None, source=None) -> dict:
    """The metadata dict of one export (see the module docstring)."""
    meta = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "export_format": fmt,
        "model": task.spec(), "num_classes": int(task.num_classes), "names": list(names),
        "imgsz": [int(image_hw[0]), int(image_hw[1])], "stride": STRIDE, "batch": batch,
        "dtype": "float16" if half else "float32", "letterbox": LETTERBOX,
        "nms": {"max_det": int(max_det), "class_aware": True, "multi_label": False,
                "inputs": ["conf", "iou"]} if nms else None,
        "inputs": ["images", "conf", "iou"] if nms else ["images"], "outputs": list(outputs),
    }
    if opset is not None:
        meta["opset"] = int(opset)
    if source is not None:
        meta["source"] = str(source)
    return meta


def to_props(meta: dict) -> dict[str, str]:
    """Metadata -> ONNX metadata_props (string -> string): every value as JSON."""
    return {key: json.dumps(value) for key, value in meta.items()}


def from_props(props: dict[str, str]) -> dict:
    """ONNX metadata_props -> the metadata dict (values that are not JSON stay text)."""
    meta = {}
    for key, value in props.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta
