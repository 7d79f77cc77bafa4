"""yolojax.data: sources, augmentation and the grain input pipeline.

- `build_dataset(cfg, split, seed)` -> `DetectionDataset` (API in `yolojax.data.pipeline`).
- `letterbox`, `resize_long_side` and the other image transforms: `yolojax.data.transforms`.
- `ensure_shapes_dataset(root=None, *, seed=0)` -> data yaml path of the embedded shapes dataset.
"""
from yolojax.data.pipeline import build_dataset
from yolojax.data.shapes import ensure_shapes_dataset
from yolojax.data.transforms import letterbox, resize_long_side

__all__ = ["build_dataset", "ensure_shapes_dataset", "letterbox", "resize_long_side"]
