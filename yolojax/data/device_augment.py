"""The augmentation a train batch leaves to the accelerator, as one jit-able function of the batch.

Depending on the pipeline's options (see yolojax.data.pipeline), a host batch may carry:
- `warp_*` (`warp_on_device`): `images` are the batch's source tiles and `warp_slots`, `warp_placements` and the
  warp's coordinate tables say how to render each sample's Mosaic + RandomPerspective (yolojax.data.device_warp);
- `hsv_lut` (`hsv_on_device`): `images` (after the render) are BGR and RandomHSV's tables turn them into RGB
  (yolojax.data.device_hsv).
`finish_augmentation` applies what is there, in the CPU pipeline's order, and returns the batch with RGB `images`
(b, s, s, 3) uint8 and without those keys: exactly the images of the CPU pipeline.
"""
from __future__ import annotations

from yolojax.data.device_hsv import apply_hsv_luts
from yolojax.data.device_warp import render_warped

WARP_PREFIX = "warp_"  # batch keys of the device render's inputs


def finish_augmentation(batch: dict) -> dict:
    """batch (dict of arrays, on one device or one device's shard) -> batch with RGB `images`; other keys pass."""
    batch = dict(batch)
    warp = {k[len(WARP_PREFIX):]: batch.pop(k) for k in list(batch) if k.startswith(WARP_PREFIX)}
    if warp:
        slots, placements = warp.pop("slots"), warp.pop("placements")
        batch["images"] = render_warped(batch["images"], slots, placements, warp)
    luts = batch.pop("hsv_lut", None)
    if luts is not None:
        batch["images"] = apply_hsv_luts(batch["images"], luts)
    return batch
