"""Reference (PyTorch) YOLOv8 state_dict <-> our Flax variables: names and layouts. Pure numpy, no I/O.

Naming rule: the flax module path `model_22/cv2_0_1/conv` is the PyTorch module `model.22.cv2.0.1.conv` (every `_`
in a module name is a `.`). Leaves:
  params/.../conv/kernel (kh, kw, in, out) HWIO  <- `.conv.weight` (out, in, kh, kw) OIHW
  params/.../bn/scale, bn/bias                   <- `.bn.weight`, `.bn.bias`
  batch_stats/.../bn/mean, bn/var                <- `.bn.running_mean`, `.bn.running_var`
  params/.../cv?_?_2/kernel, bias                <- head 1x1 convs `.weight` (OIHW), `.bias`
Ignored: `num_batches_tracked`; `model.22.dfl.conv.weight` (fixed bins 0..reg_max-1, checked, not stored).
"""
from __future__ import annotations

import numpy as np

from yolojax.convert.sources import WeightsFileError
from yolojax.models.yolov8 import SCALES, scaled_channels

IGNORED_SUFFIXES = (".num_batches_tracked",)
DFL_KEY = "model.22.dfl.conv.weight"
LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


class WeightMismatchError(WeightsFileError):
    """Source weights do not fit the model (scale, class count, missing or extra tensors)."""


def torch_key(collection: str, path: tuple[str, ...]) -> str:
    """Flax (collection, path) -> PyTorch state_dict key, e.g. ('params', ('model_0', 'conv', 'kernel'))
    -> 'model.0.conv.weight'."""
    modules, leaf = path[:-1], path[-1]
    if (collection, leaf) not in LEAF_NAMES:
        raise KeyError(f"no PyTorch name for {collection}/{'/'.join(path)}")
    return ".".join([m.replace("_", ".") for m in modules] + [LEAF_NAMES[(collection, leaf)]])


def to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    """Conv weights OIHW -> HWIO; vectors unchanged."""
    return np.transpose(array, (2, 3, 1, 0)) if leaf == "kernel" else array


def to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    """Conv kernels HWIO -> OIHW; vectors unchanged."""
    return np.transpose(array, (3, 2, 0, 1)) if leaf == "kernel" else array


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, prefix + (k,))
    else:
        yield prefix, tree


def _set(tree: dict, path: tuple[str, ...], value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def infer_scale_and_classes(state: dict) -> tuple[str, int]:
    """Guess (scale, num_classes) from a reference state_dict: the stem width and the class conv's bias size."""
    stem, cls_bias = state.get("model.0.conv.weight"), state.get("model.22.cv3.0.2.bias")
    if stem is None or cls_bias is None:
        raise WeightMismatchError("not a YOLOv8 detection state_dict: 'model.0.conv.weight' or "
                                  "'model.22.cv3.0.2.bias' is missing")
    widths = {scaled_channels(64, s): s for s in SCALES}
    if stem.shape[0] not in widths:
        raise WeightMismatchError(f"model.0.conv.weight has {stem.shape[0]} output channels, which matches no "
                                  f"YOLOv8 scale ({widths})")
    scale = widths[stem.shape[0]]
    return scale, int(cls_bias.shape[0])


def state_dict_to_variables(state: dict, template: dict, reg_max: int = 16) -> dict:
    """Map a reference state_dict onto our variable tree.

    Args:
      state: PyTorch key -> numpy array (any float dtype).
      template: our variables (or `jax.eval_shape` of them): {"params": ..., "batch_stats": ...}; gives the
        expected names and shapes.
    Returns:
      variables with the template's structure, float32 numpy arrays.
    Raises:
      WeightMismatchError naming the first missing, extra or wrongly shaped tensor.
    """
    variables, used = {}, set()
    for (collection, *path), leaf in sorted(_flatten(template), key=lambda kv: kv[0]):
        key = torch_key(collection, tuple(path))
        if key not in state:
            raise WeightMismatchError(f"tensor {key!r} (for {collection}/{'/'.join(path)}) is missing from the "
                                      "source weights — wrong model family or scale?")
        value = to_flax_layout(path[-1], np.array(state[key], dtype=np.float32))  # a copy: never alias torch
        if tuple(value.shape) != tuple(leaf.shape):
            expected = to_torch_layout(path[-1], np.empty(leaf.shape, np.uint8)).shape
            raise WeightMismatchError(f"tensor {key!r} has shape {tuple(state[key].shape)}, the model expects "
                                      f"{tuple(expected)} — wrong scale or class count (nc)?")
        _set(variables, (collection, *path), value)
        used.add(key)
    _check_dfl(state, reg_max)
    extra = sorted(k for k in state if k not in used and k != DFL_KEY and not k.endswith(IGNORED_SUFFIXES))
    if extra:
        raise WeightMismatchError(f"source weights have {len(extra)} tensors the model does not use, first "
                                  f"{extra[0]!r} — wrong scale, or not a plain YOLOv8 detection model?")
    return variables


def variables_to_state_dict(variables: dict) -> dict:
    """Our variables -> reference-style state_dict of numpy float32 arrays (the inverse of the import)."""
    state = {}
    for (collection, *path), leaf in _flatten(variables):
        state[torch_key(collection, tuple(path))] = to_torch_layout(path[-1], np.asarray(leaf, np.float32))
    return state


def _check_dfl(state: dict, reg_max: int):
    if DFL_KEY not in state:
        return
    bins = np.asarray(state[DFL_KEY], np.float32).reshape(-1)
    if bins.shape != (reg_max,) or not np.array_equal(bins, np.arange(reg_max, dtype=np.float32)):
        raise WeightMismatchError(f"tensor {DFL_KEY!r} should hold the fixed bins 0..{reg_max - 1}, got "
                                  f"shape {tuple(np.shape(state[DFL_KEY]))}")
