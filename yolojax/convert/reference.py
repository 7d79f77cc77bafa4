"""The reference YOLOv8 (ultralytics `DetectionModel`) built from its yaml, for parity tests and benchmarks.

Imports torch and ultralytics lazily: they are the optional [parity] extra.
"""
from __future__ import annotations

import numpy as np


def build_reference_model(scale: str = "n", num_classes: int = 80, seed: int = 0, randomize_bn: bool = True):
    """Reference DetectionModel for `yolov8{scale}.yaml` with random weights, in eval mode, float32 CPU.

    With `randomize_bn`, every BatchNorm's weight, bias, running_mean and running_var is redrawn from `seed`
    (a fresh model has identity statistics, which would hide layout mistakes in the statistics).
    """
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"yolov8{scale}.yaml", nc=num_classes, verbose=False)
    if randomize_bn:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    c = module.num_features
                    module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(c, generator=generator) * 0.5)
                    module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
                    module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
    return model.eval()


def reference_state_dict(model) -> dict:
    """{key: float32 numpy array} of a torch module's state_dict."""
    return {k: v.detach().float().cpu().numpy().copy() for k, v in model.state_dict().items()}


def reference_eval_outputs(model, images_nhwc: np.ndarray) -> np.ndarray:
    """Reference eval forward on (b, h, w, 3) float images in [0, 1] -> (b, a, 4 + nc): xywh pixels, then probs."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))))
    return out[0].numpy().transpose(0, 2, 1)
