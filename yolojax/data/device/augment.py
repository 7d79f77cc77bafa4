"""The augmentation a train batch leaves to the accelerator, as one jit-able function of the batch.

Depending on the pipeline's options (see yolojax.data.pipeline), a host batch may carry:
- `warp_*` (`warp_on_device`): `images` are the batch's source tiles and `warp_slots`, `warp_placements` and the
  warp's coordinate tables say how to render each sample's Mosaic + RandomPerspective (yolojax.data.device.warp);
- `warp_mix_*` (`warp_on_device` with mixup > 0): each sample's MixUp partner, rendered the same way, and the
  blend as a lookup table `warp_mix_lut` (b, 65536) uint8;
- `hsv_lut` (`hsv_on_device`): `images` (after the render) are BGR and RandomHSV's tables turn them into RGB
  (yolojax.data.device.hsv).
`finish_augmentation` applies what is there, in the CPU pipeline's order, and returns the batch with RGB `images`
(b, s, s, 3) uint8 and without those keys: exactly the images of the CPU pipeline.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from yolojax.data.device.hsv import apply_hsv_luts
from yolojax.data.device.tables import MIX_PREFIX, WARP_PREFIX
from yolojax.data.device.warp import render_warped


def render(tiles, plan: dict):
    """tiles (n, S, S, 3) uint8 and one plan {slots (b, 4), placements (b, 4, 6), the stacked `affine_tables`}
    -> (b, H, W, 3) uint8: `warp.render_warped`."""
    plan = dict(plan)
    return render_warped(tiles, plan.pop("slots"), plan.pop("placements"), plan)


def mix_with_table(images, partners, luts):
    """MixUp as a lookup: images, partners (b, h, w, 3) uint8; luts (b, 65536) uint8 (`transforms.mixup_table`)."""
    index = images.astype(jnp.int32) * 256 + partners.astype(jnp.int32)
    return jax.vmap(lambda lut, i: lut[i])(luts, index)


def finish_augmentation(batch: dict) -> dict:
    """batch (dict of arrays, on one device or one device's shard) -> batch with RGB `images`; other keys pass."""
    batch = dict(batch)
    warp = {k[len(WARP_PREFIX):]: batch.pop(k) for k in list(batch) if k.startswith(WARP_PREFIX)}
    if warp:
        mix = {k[len(MIX_PREFIX):]: warp.pop(k) for k in list(warp) if k.startswith(MIX_PREFIX)}
        tiles = batch["images"]
        batch["images"] = render(tiles, warp)
        if mix:
            luts = mix.pop("lut")
            batch["images"] = mix_with_table(batch["images"], render(tiles, mix), luts)
    luts = batch.pop("hsv_lut", None)
    if luts is not None:
        batch["images"] = apply_hsv_luts(batch["images"], luts)
    return batch
