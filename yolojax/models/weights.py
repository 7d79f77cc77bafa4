"""The on-disk weights format: an orbax checkpoint of the variables plus a JSON file of metadata.

Layout of a weights directory `PATH`:
  PATH/arrays/     orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...} (float32)
  PATH/meta.json   {"format": "yolojax-weights", "version": 1, "model": "yolov8", "scale": "n",
                    "num_classes": 80, "names": [...], "imgsz": 640, ...}
`yolojax convert` writes it, training exports its EMA weights through it, val and predict read it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT_NAME = "yolojax-weights"
FORMAT_VERSION = 1
REQUIRED_META = ("scale", "num_classes")


def save_weights(path, variables: dict, meta: dict | None = None, *, overwrite: bool = True) -> Path:
    """Write `variables` (a pytree of arrays) and `meta` (JSON-serialisable) under the directory `path`.

    meta must hold at least `scale` and `num_classes`; `names` (class names) and `imgsz` are recommended.
    Writes from the calling process alone (in a multi-process run, call it on one). Returns the absolute
    directory path.
    """

    meta = dict(meta or {})
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_weights({path}): meta is missing {missing}")
    path = Path(path).absolute()
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"save_weights: {path} already exists")
        if not (path / "meta.json").exists() and any(path.iterdir()):
            raise FileExistsError(f"save_weights: {path} exists and is not a yolojax weights directory; "
                                  "refusing to overwrite it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    arrays = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), dict(variables))
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_alone()) as checkpointer:
        checkpointer.save(path / "arrays", arrays)
        checkpointer.wait_until_finished()
    full_meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": "yolov8", **meta}
    (path / "meta.json").write_text(json.dumps(full_meta, indent=2, default=_json_default))
    return path


def load_weights(path) -> tuple[dict, dict]:
    """Read a weights directory written by `save_weights` -> (variables as numpy float32 arrays, meta dict)."""

    path = Path(path).absolute()
    meta_file = path / "meta.json"
    if not meta_file.is_file() or not (path / "arrays").is_dir():
        hint = ""
        if path.is_file() and path.suffix in (".pt", ".pth", ".safetensors"):
            hint = " — it looks like PyTorch weights: import them first with `yolojax convert SRC DST`"
        raise FileNotFoundError(f"load_weights: {path} is not a yolojax weights directory (expected "
                                f"{meta_file.name} and arrays/){hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"load_weights: {meta_file} is not valid JSON: {err}") from err
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"load_weights: {meta_file} has format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_alone()) as checkpointer:
        arrays = checkpointer.restore(path / "arrays")
    variables = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), arrays)
    return variables, meta


def this_process_alone() -> "ocp.options.MultiprocessingOptions":
    """Orbax options for a save or restore by this process alone: by default orbax waits at barriers for every
    process of a multi-process job, and a weights file is read or written by one (process 0's final validation)."""
    index = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(np.asarray(value).tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"save_weights: meta value {value!r} is not JSON-serialisable")
