"""Read reference weights from disk into a flat {name: numpy array} state_dict (I/O only).

Supported sources:
  *.safetensors                       safetensors file of the state_dict tensors (no code is executed)
  *.pt / *.pth state_dict             `torch.save(model.state_dict())`, read with `torch.load(weights_only=True)`
  ultralytics checkpoint *.pt         {"model": DetectionModel, "ema": ..., ...}: pickled Python objects. Unpickling
                                      runs code named in the file, so it is refused unless `trust_pickle=True`.
A file is recognised by its first bytes, not its name. safetensors needs only the `safetensors` package; PyTorch
files need torch (the [parity] extra). What cannot be read raises WeightsFileError, one line naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class WeightsFileError(ValueError):
    """A source that is not reference weights, does not exist, or needs a package that is not installed."""


class UntrustedPickleError(WeightsFileError, RuntimeError):
    """The file needs full unpickling (arbitrary code) and the caller did not opt in."""


# first bytes of files that are not weights, to name what was given instead
OTHER_FORMATS = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
                 b"BM": "a BMP image", b"RIFF": "a RIFF (WebP / AVI) file", b"{": "a JSON text file",
                 b"\x89HDF": "an HDF5 (Keras) file", b"\x08": "an ONNX model (protobuf)"}
PARITY_EXTRA = "pip install 'yolojax[parity]'"


def sniff_format(path: Path) -> str:
    """"safetensors", "torch" (a zip archive as torch.save writes, or a legacy pickle), or a description of what
    else the file looks like."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100 << 20:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return next((kind for magic, kind in OTHER_FORMATS.items() if head.startswith(magic)), "an unknown format")


def load_source(path, *, trust_pickle: bool = False) -> tuple[dict, dict]:
    """Load reference weights.

    Returns:
      state: {PyTorch key: float32 numpy array}.
      info: what the file says about itself: may hold `names` (list of class names), `yaml` (model config dict).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileNotFoundError(f"convert: source weights {path} do not exist")
    kind = sniff_format(path)
    if kind == "safetensors":
        return _load_safetensors(path), {}
    if kind != "torch":
        raise WeightsFileError(f"convert: {path} is not a weights file: it looks like {kind} (expected a PyTorch "
                               ".pt / .pth state_dict or ultralytics checkpoint, or a .safetensors file)")
    return _load_torch(path, trust_pickle)


class WeightsFileNotFoundError(WeightsFileError, FileNotFoundError):
    """The source file does not exist."""


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors.numpy import load_file
    except ModuleNotFoundError as err:
        raise WeightsFileError(f"convert: reading {path} needs the safetensors package (pip install safetensors; "
                               "torch is not needed)") from err

    try:
        return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
    except Exception as err:  # safetensors raises its own error types
        raise WeightsFileError(f"convert: {path} is not a readable safetensors file: {err}") from err


def _load_torch(path: Path, trust_pickle: bool) -> tuple[dict, dict]:
    try:
        import torch
    except ModuleNotFoundError as err:
        raise WeightsFileError(f"convert: {path} is a PyTorch file; reading it needs torch: {PARITY_EXTRA} (a "
                               ".safetensors file of the same weights needs no torch)") from err

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
        raise WeightsFileError(f"convert: {path} needs the module {err.name!r} to unpickle (ultralytics checkpoints "
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
            raise WeightsFileError(f"convert: {path}: checkpoint entry 'ema'/'model' is a {type(module).__name__}, "
                             "expected a torch module or a state_dict")
    if not _is_tensor_dict(obj):
        raise WeightsFileError(f"convert: {path} holds a {type(obj).__name__}, not a state_dict of tensors")
    return {k: v.detach().float().cpu().numpy() for k, v in obj.items()}, info


def _is_tensor_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
