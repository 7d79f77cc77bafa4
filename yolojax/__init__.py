"""yolojax: YOLOv8 (and a Faster R-CNN-style two-stage path) as pure, jit-compiled JAX/Flax functions.

`yolojax.YOLO` (yolojax.api) is the Python API; it is imported on first use, so `import yolojax` stays cheap.
"""
import importlib


def __getattr__(name: str):
    if name == "YOLO":
        return importlib.import_module("yolojax.api").YOLO
    raise AttributeError(f"module 'yolojax' has no attribute {name!r}")
