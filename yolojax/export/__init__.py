"""Export of trained weights for inference elsewhere: ONNX (through jax2onnx) and StableHLO (`jax.export`), with
class names, input size and conventions as metadata; `load_onnx_detector` runs an exported .onnx file as a
predict detector through ONNX Runtime. docs/export.md has the details."""
from yolojax.export.api import FORMATS, ExportError, export_model
from yolojax.export.runtime import OnnxDetector, load_onnx_detector
from yolojax.export.stablehlo import load_stablehlo

__all__ = ["ExportError", "FORMATS", "OnnxDetector", "export_model", "load_onnx_detector", "load_stablehlo"]
