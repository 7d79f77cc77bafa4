"""The part of the training augmentation that runs on the accelerator, and what the host needs to hand it over.

Jitted (jnp; called inside the train step, or on the CPU by yolojax.data.preview):
- `augment.finish_augmentation(batch)`: renders a batch's `warp_*` inputs, blends the MixUp partners and applies
  `hsv_lut`, giving the CPU pipeline's RGB images;
- `warp.render_warped`: Mosaic + RandomPerspective pixels, bit-exact with OpenCV's `warpAffine`;
- `hsv.apply_hsv_luts`: RandomHSV's BGR -> HSV -> lookup -> RGB, bit-exact with OpenCV's `cvtColor`.

Host (numpy / plain Python, used by the input pipeline in yolojax.data to describe the batch):
- `tables`: the batch keys (`WARP_PREFIX`, `MIX_PREFIX`) and each sample's warp tables (`affine_tables`,
  `tile_rows`);
- `options`: the cfg options `hsv_on_device` / `warp_on_device` resolved to booleans (it asks JAX only for the
  backend and the device count).

Nothing is imported here, so the host side does not load the jitted modules by importing this package.
"""
