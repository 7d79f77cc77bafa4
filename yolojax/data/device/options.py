"""Which parts of the training augmentation run on the accelerator: the cfg options `hsv_on_device` and
`warp_on_device` (see yolojax.data.pipeline) resolved to booleans, and what stands in the way of each."""
from __future__ import annotations

import jax

MIN_WARP_GROUP = 8  # warp_on_device "auto" needs at least this many images per device for mosaic partners


def on_accelerator() -> bool:
    """Whether JAX's default backend is a gpu or tpu."""

    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def resolve_hsv_on_device(value, multi_scale=False) -> bool:
    """cfg `hsv_on_device` -> bool: True / False as given, "auto" -> on a gpu / tpu backend without multi_scale."""
    if isinstance(value, str) and value.lower() == "auto":
        return on_accelerator() and not multi_scale
    if not isinstance(value, bool):
        raise ValueError(f"hsv_on_device={value!r} must be true, false or auto")
    return value


def warp_blockers(aug, multi_scale=False) -> list[str]:
    """Why, with `aug` (an augment.AugmentConfig), the Mosaic + RandomPerspective pixels cannot be rendered on the
    device ([] if they can): the device renders 4-mosaics and letterboxes through an affine warp, MixUp, then
    RandomHSV."""
    reasons = [name for name, on in (("mosaic9", aug.mosaic9), ("copy_paste > 0", aug.copy_paste > 0),
                                     ("perspective != 0", aug.perspective), ("albumentations", aug.albumentations),
                                     ("multi_scale", multi_scale)) if on]
    if not aug.hsv_on_device and (aug.hsv_h or aug.hsv_s or aug.hsv_v):
        reasons.append("hsv_on_device off (RandomHSV comes after the warp)")
    return reasons


def resolve_warp_on_device(value, aug, multi_scale: bool, group: int) -> bool:
    """cfg `warp_on_device` -> bool. "auto": on with a gpu / tpu backend when `warp_blockers` is empty and each device
    gets at least MIN_WARP_GROUP images (its mosaic partners come from its own part of the batch)."""
    blockers = warp_blockers(aug, multi_scale)
    if isinstance(value, str) and value.lower() == "auto":
        return on_accelerator() and not blockers and group >= MIN_WARP_GROUP
    if not isinstance(value, bool):
        raise ValueError(f"warp_on_device={value!r} must be true, false or auto")
    if value and blockers:
        raise ValueError(f"warp_on_device: true is not possible with {', '.join(blockers)}; "
                         "set warp_on_device: false (or auto)")
    return value


def device_group(batch_size: int) -> int:
    """Images per device of a global batch: a device-rendered mosaic takes its tiles from its own device's rows."""

    return max(1, batch_size // jax.device_count())
