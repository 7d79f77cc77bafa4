"""The YAML configs that ship inside the package (declared as package data in pyproject.toml):

- `default.yaml`: every training key and its default (yolojax.train.config);
- `<cfg>.yaml`: recipes overlaid on the defaults (`cfg=shapes`);
- `data/<name>.yaml`: dataset yamls named by `data=` (yolojax.data.pipeline);
- `models/<name>.yaml`: model specs named by `model=`.

They are located through importlib.resources rather than relative to the source tree, so an installed wheel finds
them in site-packages just as a checkout finds them here.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def config_path(*parts: str) -> Path:
    """`config_path("models", "yolov8n.yaml")` -> that packaged file (or folder) as a file-system path.

    A real path rather than an importlib Traversable: data yamls name their dataset relative to their own folder,
    and callers list folders with glob. A wheel installs the package as plain files; a zipped import would not work.
    """
    root = files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError(f"yolojax configs at {root} are not plain files (zipped install?); "
                           "install yolojax with pip so its package data is unpacked")
    return root.joinpath(*parts)
