"""`export_model`: yolojax weights -> an ONNX file or a StableHLO artefact (what `yolojax export` runs)."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from yolojax.detectors import YOLOv8Task
from yolojax.eval.predict import load_jax_detector
from yolojax.export.graph import NMS_OUTPUTS, RAW_OUTPUTS, detector_function
from yolojax.export.metadata import STRIDE, export_metadata
from yolojax.export.onnx_export import DEFAULT_OPSET, SUPPORTED_OPSETS, export_onnx
from yolojax.export.stablehlo import batch_dimension, export_stablehlo

FORMATS = {"onnx": ".onnx", "stablehlo": ".stablehlo"}


class ExportError(ValueError):
    """A wrong export argument or weights file; the message is one line naming it and what is allowed."""


def _image_hw(imgsz) -> tuple[int, int]:
    hw = (imgsz, imgsz) if isinstance(imgsz, int) and not isinstance(imgsz, bool) else tuple(imgsz or ())
    if len(hw) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % STRIDE for v in hw):
        raise ExportError(f"imgsz={imgsz!r} must be a positive multiple of {STRIDE}, or [h, w] of them")
    return int(hw[0]), int(hw[1])


def check_arguments(format, imgsz, batch, half, nms, opset, max_det) -> tuple[tuple[int, int], int | None]:
    """One-line ExportError for any bad argument. Returns (image (h, w), opset or None for StableHLO)."""
    if format not in FORMATS:
        raise ExportError(f"format={format!r} unknown; allowed: {', '.join(FORMATS)}")
    image_hw = _image_hw(imgsz)
    if batch != "dynamic" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ExportError(f"batch={batch!r} must be a positive integer or 'dynamic'")
    if not isinstance(max_det, int) or isinstance(max_det, bool) or max_det < 1:
        raise ExportError(f"max_det={max_det!r} must be a positive integer")
    for key, value in (("half", half), ("nms", nms)):
        if not isinstance(value, bool):
            raise ExportError(f"{key}={value!r} must be true or false")
    if format == "stablehlo":
        if opset is not None:
            raise ExportError(f"opset={opset} applies to format=onnx only")
        return image_hw, None
    opset = DEFAULT_OPSET if opset is None else opset
    if not isinstance(opset, int) or isinstance(opset, bool) or opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset={opset!r} unsupported; allowed: {SUPPORTED_OPSETS.start} to "
                          f"{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    return image_hw, opset


def default_out(weights, format: str) -> Path:
    """Beside the weights: runs/x/weights/best -> runs/x/weights/best.onnx (or .stablehlo)."""
    path = Path(weights)
    return path.parent / f"{path.stem if path.is_file() else path.name}{FORMATS[format]}"


def export_model(weights, format="onnx", imgsz=640, batch=1, half=False, nms=False, opset=None, out=None, *,
                 max_det=300) -> Path:
    """Export YOLOv8 weights for inference outside this package.

    Args:
      weights: a yolojax weights folder (or reference .pt / .safetensors weights, imported on the fly).
      format: "onnx" (jax2onnx, for ONNX Runtime / TensorRT) or "stablehlo" (`jax.export`, serialized).
      imgsz: input size, int or [h, w], multiples of 32 (the graph's spatial shape is fixed).
      batch: fixed batch size, or "dynamic" (a symbolic batch dimension).
      half: compute in float16 (outputs stay float32).
      nms: put NMS in the graph (extra inputs conf, iou; outputs max_det rows and a valid mask), else the graph
        ends at the decoded boxes and class probabilities.
      opset: ONNX opset (default 17); None for StableHLO.
      out: output path (default: beside the weights, with the format's suffix).
      max_det: rows per image with nms.
    Returns:
      the written model path (StableHLO: its metadata is the .json beside it). ExportError on a bad argument.
    """
    image_hw, opset = check_arguments(format, imgsz, batch, half, nms, opset, max_det)
    try:
        loaded = load_jax_detector(weights)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(f"weights={weights}: {str(err).splitlines()[0]}") from None
    if not isinstance(loaded.task, YOLOv8Task):
        raise ExportError(f"weights={weights}: a {loaded.task.name} model; export covers YOLOv8 weights only")
    task = YOLOv8Task(scale=loaded.task.scale, num_classes=loaded.task.num_classes,
                      dtype=jnp.float16 if half else jnp.float32)
    fn = detector_function(task, loaded.variables, image_hw, nms=nms, max_det=max_det, loop_images=format == "onnx")
    outputs = NMS_OUTPUTS if nms else RAW_OUTPUTS
    meta = export_metadata(task, loaded.names, image_hw=image_hw, batch=batch, half=half, nms=nms, max_det=max_det,
                           fmt=format, outputs=outputs, opset=opset, source=weights)
    inputs = ["images", "conf", "iou"] if nms else ["images"]
    out = Path(out) if out is not None else default_out(weights, format)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    if format == "onnx":
        images = jax.ShapeDtypeStruct(("batch" if batch == "dynamic" else batch, *image_hw, 3), jnp.uint8)
        return export_onnx(fn, [images, scalar, scalar][:len(inputs)], inputs, outputs, opset, meta, out)
    images = jax.ShapeDtypeStruct((batch_dimension(batch), *image_hw, 3), jnp.uint8)
    return export_stablehlo(fn, [images, scalar, scalar][:len(inputs)], meta, out)
