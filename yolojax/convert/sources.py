"""Read reference weights from disk into a flat {name: numpy array} state_dict (I/O only).

Supported sources:
  *.safetensors                       safetensors file of the state_dict tensors (no code is executed)
  *.pt / *.pth state_dict             `torch.save(model.state_dict())`, read with `torch.load(weights_only=True)`
  ultralytics checkpoint *.pt         {"model": DetectionModel, "ema": ..., ...}: pickled Python objects. Unpickling
                                      runs code named in the file, so it is refused unless `trust_pickle=True`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class UntrustedPickleError(RuntimeError):
    """The file needs full unpickling (arbitrary code) and the caller did not opt in."""


def load_source(path, *, trust_pickle: bool = False) -> tuple[dict, dict]:
    """Load reference weights.

    Returns:
      state: {PyTorch key: float32 numpy array}.
      info: what the file says about itself: may hold `names` (list of class names), `yaml` (model config dict).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"convert: source weights {path} do not exist")
    if path.suffix == ".safetensors":
        return _load_safetensors(path), {}
    return _load_torch(path, trust_pickle)


def _load_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    try:
        return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"convert: {path} is not a readable safetensors file: {err}") from err


def _load_torch(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if not trust_pickle:
            raise UntrustedPickleError(
                f"convert: {path} is not a plain tensor state_dict (a weights-only load failed: "
                f"{str(err).splitlines()[0][:200]}). If it is an ultralytics checkpoint, loading it unpickles "
                "Python objects, which can run arbitrary code from the file: pass --trust-pickle "
                "(trust_pickle=True) only for files from a source you trust.") from err
        obj = _load_pickled(path)
    return _state_from_object(obj, path)


def _load_pickled(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise RuntimeError(f"convert: {path} needs the module {err.name!r} to unpickle (ultralytics checkpoints "
                           "need the `ultralytics` package installed)") from err


def _state_from_object(obj, path: Path) -> tuple[dict, dict]:
    import torch

    info = {}
    if isinstance(obj, dict) and any(k in obj for k in ("ema", "model")) and not _is_tensor_dict(obj):
        module = obj.get("ema") or obj.get("model")
        if isinstance(module, dict):  # {"model": state_dict}
            obj = module
        elif isinstance(module, torch.nn.Module):
            names = getattr(module, "names", None)
            if isinstance(names, dict):
                names = [names[i] for i in sorted(names)]
            if names is not None:
                info["names"] = list(names)
            if isinstance(getattr(module, "yaml", None), dict):
                info["yaml"] = module.yaml
            obj = module.state_dict()
        else:
            raise ValueError(f"convert: {path}: checkpoint entry 'ema'/'model' is a {type(module).__name__}, "
                             "expected a torch module or a state_dict")
    if not _is_tensor_dict(obj):
        raise ValueError(f"convert: {path} holds a {type(obj).__name__}, not a state_dict of tensors")
    return {k: v.detach().float().cpu().numpy() for k, v in obj.items()}, info


def _is_tensor_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
