"""RoI Pool and RoI Align on NHWC feature maps: the values of `torchvision.ops.roi_pool` / `roi_align`.

Both take RoIs as `(k, 5)` rows `[batch_index, x1, y1, x2, y2]` in input-image pixels, map them onto the feature
map with `spatial_scale` (= 1 / stride) and return `(k, out_h, out_w, c)`. Both are pure, jit-able, batched (no
per-RoI Python loop), deterministic, and differentiable with respect to the features (as in the reference, no
gradient flows into the RoI coordinates).

RoI Align is written as two small matrices per RoI: bilinear interpolation and the average over each bin's
sampling grid are separable in y and x, so

    out[k, p, q, :] = (1 / count_k) * sum_{h, w} wy[k, p, h] * wx[k, q, w] * features[b_k, h, w, :]

where `wy[k, p, h]` sums, over the sample rows of bin `p`, the bilinear weight each sample puts on feature row
`h` (zero for samples outside `[-1, height]`, edge clamping as in the reference). The two contractions run as
matmuls (tensor cores on GPU, a deterministic gradient). The adaptive grid (`sampling_ratio <= 0`, the reference
uses `ceil(roi_size / out_size)` samples per bin, a value known only at run time) needs no static bound: since
adaptive samples are more than 0.5 px apart (or alone in their bin), at most 4 of them reach any one feature row,
so `wy[k, p, h]` is computed from a static window of candidate samples around `h`, masked to the bin's real grid.
With a fixed `sampling_ratio`, `method="gather"` instead gathers the 4 bilinear taps of every sample (the
reference kernel's work, fewer FLOPs; its gradient is a scatter-add).

RoI Pool takes, for each bin, the maximum over a rectangle of feature cells. The rectangle can be as large as the
map, so instead of a static window it reads a 2-D sparse table (max over every `2^i x 2^j` block, with the
row-major first position of the maximum): any rectangle is the union of four such blocks, so each output is four
gathers. The output gathers the feature at the reference's argmax (first maximum in row-major order), which makes
the gradient identical to the reference's, ties included.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST
_ADAPTIVE_CANDIDATES = 7  # window of candidate samples per feature row for the adaptive grid (4 can contribute)


def _pair(output_size):
    out = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"output_size must be an int or (out_h, out_w) of positive ints, got {output_size!r}")
    return out


def _check(name, features, rois):
    if features.ndim != 4:
        raise ValueError(f"{name}: features must be (n, h, w, c) NHWC, got shape {features.shape}")
    if rois.ndim != 2 or rois.shape[-1] != 5:
        raise ValueError(f"{name}: rois must be (k, 5) [batch_index, x1, y1, x2, y2], got shape {rois.shape}")


def _divide(x, divisor):
    """x / divisor with IEEE division: XLA rewrites division by a constant as multiplication by its reciprocal,
    which moves results across the integer boundaries that the reference's floor / ceil see."""
    return x / lax.optimization_barrier(jnp.full_like(x, divisor))


def _round_half_away(x):
    """std::round: ties away from zero (jnp.round rounds ties to even)."""
    whole = jnp.trunc(x)
    return jnp.where(jnp.abs(x - whole) == 0.5, whole + jnp.sign(x), jnp.round(x))


# --------------------------------------------------------------------------------------------------- RoI Align


def _bilinear_rows(coord, size: int):
    """1-D bilinear taps of sample coordinates, with the reference's border rules.

    Args:
      coord: (...) float sample positions, feature cells (cell centres at integer + 0.5 - 0.5 = integers).
      size: extent of the map along this axis.
    Returns:
      low, high: (...) int32 rows; w_low, w_high: (...) float weights; inside: (...) bool, False for samples
      outside `[-1, size]` (they contribute 0).
    """
    inside = (coord >= -1.0) & (coord <= size)
    coord = jnp.maximum(coord, 0.0)
    low = coord.astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    coord = jnp.where(at_edge, low.astype(coord.dtype), coord)
    w_high = coord - low
    return low, high, 1.0 - w_high, w_high, inside


def _fixed_samples(start, bin_size, grid, size: int, pooled: int, sampling_ratio: int):
    """Bilinear taps of the `sampling_ratio` samples of every bin along one axis: five (k, pooled, s) arrays."""
    bin_start = start[:, None] + jnp.arange(pooled, dtype=start.dtype)[None, :] * bin_size[:, None]  # (k, p)
    index = jnp.arange(sampling_ratio)[None, None, :]  # (1, 1, s)
    coord = bin_start[..., None] + (index + 0.5) * bin_size[:, None, None] / grid[:, None, None]
    return _bilinear_rows(coord, size)


def _align_axis_weights(start, bin_size, grid, size: int, pooled: int, sampling_ratio: int):
    """Summed bilinear weights of each bin's samples onto each feature row (one axis of RoI Align).

    Args:
      start: (k,) RoI start along this axis, feature cells.
      bin_size: (k,) bin extent, feature cells.
      grid: (k,) int32 samples per bin along this axis (may be <= 0: no samples).
      size: feature-map extent along this axis (static).
      pooled: number of bins (static).
      sampling_ratio: > 0 for a fixed static grid, <= 0 for the adaptive grid.
    Returns:
      (k, pooled, size) float32 weights; summing over both axes' samples and dividing by the sample count gives
      the reference's average.
    """
    bin_start = start[:, None] + jnp.arange(pooled, dtype=start.dtype)[None, :] * bin_size[:, None]  # (k, p)
    step = bin_size / jnp.maximum(grid, 1).astype(bin_size.dtype)
    rows = jnp.arange(size)
    if sampling_ratio > 0:
        low, high, w_low, w_high, inside = _fixed_samples(start, bin_size, grid, size, pooled, sampling_ratio)
        taps = (w_low[..., None] * (low[..., None] == rows) + w_high[..., None] * (high[..., None] == rows))
        return jnp.sum(jnp.where(inside[..., None], taps, 0.0), axis=2)  # (k, p, size)
    # Adaptive grid: candidates for row h are the samples with index in [first, first + window) where `first`
    # is (a margin below) the first sample index whose position can reach row h (position >= h - 1).
    safe_step = jnp.where(step > 0, step, 1.0)[:, None, None]
    first = jnp.floor((rows[None, None, :] - 1.0 - bin_start[..., None]) / safe_step - 0.5) - 1.0  # (k, p, size)
    first = jnp.clip(first, 0, jnp.maximum(grid, 1)[:, None, None].astype(first.dtype)).astype(jnp.int32)
    index = first[..., None] + jnp.arange(_ADAPTIVE_CANDIDATES)  # (k, p, size, t)
    coord = bin_start[..., None, None] + (index + 0.5) * bin_size[:, None, None, None] / grid[:, None, None, None]
    low, high, w_low, w_high, inside = _bilinear_rows(coord, size)
    here = rows[None, None, :, None]
    taps = w_low * (low == here) + w_high * (high == here)
    in_grid = index < grid[:, None, None, None]
    return jnp.sum(jnp.where(inside & in_grid, taps, 0.0), axis=-1)


def _align_weights(boxes, feature_hw, output_hw, spatial_scale, sampling_ratio, aligned):
    """Row / column weight matrices and sample counts of RoI Align.

    Args:
      boxes: (k, 4) xyxy, input pixels.
    Returns:
      wy: (k, out_h, h), wx: (k, out_w, w) float32; count: (k,) float32 samples per bin (>= 1).
    """
    (height, width), (out_h, out_w) = feature_hw, output_hw
    scaled, bin_h, bin_w, grid_h, grid_w, count = _align_geometry(boxes, output_hw, spatial_scale, sampling_ratio,
                                                                 aligned)
    wy = _align_axis_weights(scaled[:, 1], bin_h, grid_h, height, out_h, sampling_ratio)
    wx = _align_axis_weights(scaled[:, 0], bin_w, grid_w, width, out_w, sampling_ratio)
    return wy, wx, count


def _align_geometry(boxes, output_hw, spatial_scale, sampling_ratio, aligned):
    """Scaled RoIs (k, 4) in feature cells, bin sizes (k,), samples per bin (k,) int32 and counts (k,) float32."""
    out_h, out_w = output_hw
    offset = 0.5 if aligned else 0.0
    scaled = boxes * spatial_scale - offset
    roi_w, roi_h = scaled[:, 2] - scaled[:, 0], scaled[:, 3] - scaled[:, 1]
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    bin_h, bin_w = _divide(roi_h, out_h), _divide(roi_w, out_w)
    if sampling_ratio > 0:
        grid_h = grid_w = lax.optimization_barrier(jnp.full(boxes.shape[:1], sampling_ratio, jnp.int32))
    else:
        grid_h, grid_w = jnp.ceil(bin_h).astype(jnp.int32), jnp.ceil(bin_w).astype(jnp.int32)
    count = jnp.maximum(grid_h * grid_w, 1).astype(jnp.float32)
    return scaled, bin_h, bin_w, grid_h, grid_w, count


def roi_align(features, rois, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False, precision=HIGHEST, method: str = "matmul"):
    """RoI Align: the average of bilinear samples on a regular grid inside each bin (`torchvision.ops.roi_align`).

    Args:
      features: (n, h, w, c) NHWC feature maps.
      rois: (k, 5) `[batch_index, x1, y1, x2, y2]`, x/y in input-image pixels (float), batch_index in [0, n).
      output_size: `out` or `(out_h, out_w)` bins.
      spatial_scale: feature cells per input pixel (1 / stride).
      sampling_ratio: samples per bin along each axis; `<= 0` uses the reference's adaptive
        `ceil(roi_size / out_size)` (handled exactly, without a static bound; see the module docstring).
      aligned: shift the RoI by -0.5 cell (pixel-centre model) and allow RoIs smaller than one cell.
      precision: matmul precision (HIGHEST for parity; DEFAULT lets GPUs use TF32 / bf16 paths).
      method: "matmul" (the separable form, any sampling_ratio, deterministic gradient; cost grows with n since
        every RoI is contracted against all images with a one-hot batch weight, see `roi_align_per_image`) or
        "gather" (sampling_ratio > 0 only: 4 bilinear taps per sample gathered from the map, the reference
        kernel's work; its gradient is a scatter-add, which XLA runs with atomics on GPU — not bitwise
        deterministic there unless XLA_FLAGS=--xla_gpu_deterministic_ops=true).
    Returns:
      (k, out_h, out_w, c) in the features' dtype.
    """
    _check("roi_align", features, rois)
    n, h, w, _ = features.shape
    out_hw = _pair(output_size)
    rois = lax.stop_gradient(rois.astype(jnp.float32))
    if method == "gather":
        if sampling_ratio <= 0:
            raise ValueError(f"roi_align: method='gather' needs a fixed sampling_ratio > 0, got {sampling_ratio}")
        return _align_by_gather(features, rois[:, 0].astype(jnp.int32), rois[:, 1:], out_hw, spatial_scale,
                                sampling_ratio, aligned)
    if method != "matmul":
        raise ValueError(f"roi_align: method must be 'matmul' or 'gather', got {method!r}")
    wy, wx, count = _align_weights(rois[:, 1:], (h, w), out_hw, spatial_scale, sampling_ratio, aligned)
    one_hot = (rois[:, 0].astype(jnp.int32)[:, None] == jnp.arange(n)).astype(wy.dtype)  # (k, n)
    wy, wx = wy.astype(features.dtype), wx.astype(features.dtype)
    if w >= h:  # contract the longer axis first: the smaller intermediate
        wx = wx[:, :, None, :] * one_hot[:, None, :, None].astype(wx.dtype)  # (k, out_w, n, w)
        cols = jnp.einsum("kqnw,nhwc->kqhc", wx, features, precision=precision)
        out = jnp.einsum("kqhc,kph->kpqc", cols, wy, precision=precision)
    else:
        wy = wy[:, :, None, :] * one_hot[:, None, :, None].astype(wy.dtype)  # (k, out_h, n, h)
        rows = jnp.einsum("kpnh,nhwc->kpwc", wy, features, precision=precision)
        out = jnp.einsum("kpwc,kqw->kpqc", rows, wx, precision=precision)
    return (out / count[:, None, None, None].astype(out.dtype)).astype(features.dtype)


def _align_by_gather(features, batch, boxes, output_hw, spatial_scale, sampling_ratio, aligned):
    """RoI Align with a fixed grid as explicit gathers: sum over the s x s samples and their 4 taps (static loop)."""
    n, h, w, c = features.shape
    (out_h, out_w), s = output_hw, sampling_ratio
    scaled, bin_h, bin_w, grid_h, grid_w, count = _align_geometry(boxes, output_hw, spatial_scale, s, aligned)
    y_low, y_high, wy_low, wy_high, y_in = _fixed_samples(scaled[:, 1], bin_h, grid_h, h, out_h, s)  # (k, oh, s)
    x_low, x_high, wx_low, wx_high, x_in = _fixed_samples(scaled[:, 0], bin_w, grid_w, w, out_w, s)  # (k, ow, s)
    flat = features.reshape(n * h * w, c)
    base = (batch * (h * w))[:, None, None]
    out = jnp.zeros((boxes.shape[0], out_h, out_w, c), features.dtype)
    for iy in range(s):
        for row, wrow in ((y_low[..., iy], wy_low[..., iy]), (y_high[..., iy], wy_high[..., iy])):
            wrow = jnp.where(y_in[..., iy], wrow, 0.0)
            for ix in range(s):
                for col, wcol in ((x_low[..., ix], wx_low[..., ix]), (x_high[..., ix], wx_high[..., ix])):
                    wcol = jnp.where(x_in[..., ix], wcol, 0.0)
                    index = base + row[:, :, None] * w + col[:, None, :]  # (k, oh, ow)
                    weight = (wrow[:, :, None] * wcol[:, None, :]).astype(features.dtype)
                    out = out + weight[..., None] * flat[index]
    return out / count[:, None, None, None].astype(out.dtype)


def roi_align_per_image(features, boxes, output_size=(7, 7), spatial_scale: float = 1.0, sampling_ratio: int = -1,
                        aligned: bool = False, precision=HIGHEST, method: str = "matmul"):
    """RoI Align for a fixed number of RoIs per image (the two-stage model's layout): no one-hot over images.

    Args:
      features: (n, h, w, c) NHWC.
      boxes: (n, r, 4) xyxy, input-image pixels; row `i` of `boxes` pools from image `i`.
      output_size, spatial_scale, sampling_ratio, aligned, precision, method: as in `roi_align`.
    Returns:
      (n, r, out_h, out_w, c), equal to `roi_align` on the same boxes with batch indices.
    """
    if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[0] != features.shape[0] or boxes.shape[-1] != 4:
        raise ValueError(f"roi_align_per_image: need features (n, h, w, c) and boxes (n, r, 4), got "
                         f"{features.shape} and {boxes.shape}")
    n, h, w, _ = features.shape
    r = boxes.shape[1]
    out_h, out_w = _pair(output_size)
    flat = lax.stop_gradient(boxes.astype(jnp.float32)).reshape(n * r, 4)
    if method == "gather":
        rois = jnp.concatenate([jnp.repeat(jnp.arange(n, dtype=jnp.float32), r)[:, None], flat], axis=1)
        out = roi_align(features, rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned, method="gather")
        return out.reshape(n, r, out_h, out_w, -1)
    wy, wx, count = _align_weights(flat, (h, w), (out_h, out_w), spatial_scale, sampling_ratio, aligned)
    wy = wy.reshape(n, r, out_h, h).astype(features.dtype)
    wx = wx.reshape(n, r, out_w, w).astype(features.dtype)
    if w >= h:  # contract the longer axis first
        cols = jnp.einsum("nrqw,nhwc->nrqhc", wx, features, precision=precision)
        out = jnp.einsum("nrqhc,nrph->nrpqc", cols, wy, precision=precision)
    else:
        rows = jnp.einsum("nrph,nhwc->nrpwc", wy, features, precision=precision)
        out = jnp.einsum("nrpwc,nrqw->nrpqc", rows, wx, precision=precision)
    return (out / count.reshape(n, r, 1, 1, 1).astype(out.dtype)).astype(features.dtype)


# ---------------------------------------------------------------------------------------------------- RoI Pool


def _pool_bin_edges(start, end, size: int, pooled: int):
    """Integer bin edges of RoI Pool along one axis (reference rounding and clipping).

    Args:
      start, end: (k,) RoI edges, feature cells (already scaled, float).
      size: feature-map extent; pooled: bins.
    Returns:
      lo, hi: (k, pooled) int32, bin `p` covers cells `[lo, hi)`, clipped to `[0, size]`.
    """
    first = _round_half_away(start).astype(jnp.int32)
    last = _round_half_away(end).astype(jnp.int32)
    extent = jnp.maximum(last - first + 1, 1)
    bin_size = _divide(extent.astype(jnp.float32), pooled)
    index = jnp.arange(pooled, dtype=jnp.float32)
    lo = jnp.floor(index[None, :] * bin_size[:, None]).astype(jnp.int32) + first[:, None]
    hi = jnp.ceil((index[None, :] + 1) * bin_size[:, None]).astype(jnp.int32) + first[:, None]
    return jnp.clip(lo, 0, size), jnp.clip(hi, 0, size)


def _prefer(value_a, index_a, value_b, index_b):
    """Larger value wins; on a tie the smaller (row-major earlier) index."""
    take_b = (value_b > value_a) | ((value_b == value_a) & (index_b < index_a))
    return jnp.where(take_b, value_b, value_a), jnp.where(take_b, index_b, index_a)


def _shift_up(x, amount: int, axis: int, fill):
    """x[..., i + amount, ...] along `axis`, padded with `fill` past the end."""
    size = x.shape[axis]
    kept = lax.slice_in_dim(x, amount, size, axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, amount)
    return jnp.pad(kept, pad, constant_values=fill)


def _block_max_table(features):
    """2-D sparse table of block maxima and their first (row-major) positions.

    Args:
      features: (n, h, w, c).
    Returns:
      values: (lh, lw, n, h, w, c), `values[i, j, :, y, x]` = max over rows [y, y + 2^i) and cols [x, x + 2^j);
      positions: same shape, int32 `row * w + col` of that maximum's first occurrence.
      lh = floor(log2 h) + 1, lw = floor(log2 w) + 1.
    """
    n, h, w, c = features.shape
    big = jnp.iinfo(jnp.int32).max
    low = jnp.finfo(features.dtype).min if jnp.issubdtype(features.dtype, jnp.floating) else 0
    level_values = [features]
    level_positions = [jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.int32).reshape(1, h, w, 1), features.shape)]
    for j in range(1, w.bit_length()):
        v, p = level_values[-1], level_positions[-1]
        shift = 1 << (j - 1)
        v, p = _prefer(v, p, _shift_up(v, shift, 2, low), _shift_up(p, shift, 2, big))
        level_values.append(v)
        level_positions.append(p)
    rows_values, rows_positions = [level_values], [level_positions]
    for i in range(1, h.bit_length()):
        shift = 1 << (i - 1)
        pairs = [_prefer(v, p, _shift_up(v, shift, 1, low), _shift_up(p, shift, 1, big))
                 for v, p in zip(rows_values[-1], rows_positions[-1])]
        rows_values.append([v for v, _ in pairs])
        rows_positions.append([p for _, p in pairs])
    values = jnp.stack([jnp.stack(level) for level in rows_values])
    positions = jnp.stack([jnp.stack(level) for level in rows_positions])
    return values, positions


def _floor_log2(x):
    """floor(log2 x) of positive int32 (garbage for x <= 0; callers mask those)."""
    return 31 - lax.clz(jnp.maximum(x, 1))


def roi_pool(features, rois, output_size=(7, 7), spatial_scale: float = 1.0):
    """RoI Pool: the maximum of each bin of the RoI mapped onto the feature map (`torchvision.ops.roi_pool`).

    Reference semantics: RoI corners are `round(coord * spatial_scale)` (ties away from zero), the RoI spans
    `max(end - start + 1, 1)` cells, bin `p` covers `[floor(p * size / out), ceil((p + 1) * size / out))` shifted
    by the RoI start and clipped to the map, and an empty bin gives 0.

    Args:
      features: (n, h, w, c) NHWC.
      rois: (k, 5) `[batch_index, x1, y1, x2, y2]`, input-image pixels.
      output_size: `out` or `(out_h, out_w)`.
      spatial_scale: feature cells per input pixel.
    Returns:
      (k, out_h, out_w, c) in the features' dtype; the gradient flows to the first maximum of each bin.
    """
    _check("roi_pool", features, rois)
    n, h, w, c = features.shape
    out_h, out_w = _pair(output_size)
    rois = lax.stop_gradient(rois.astype(jnp.float32))
    batch = rois[:, 0].astype(jnp.int32)
    scaled = rois[:, 1:] * jnp.float32(spatial_scale)
    row_lo, row_hi = _pool_bin_edges(scaled[:, 1], scaled[:, 3], h, out_h)  # (k, out_h)
    col_lo, col_hi = _pool_bin_edges(scaled[:, 0], scaled[:, 2], w, out_w)  # (k, out_w)
    empty = (row_hi <= row_lo)[:, :, None] | (col_hi <= col_lo)[:, None, :]  # (k, out_h, out_w)

    level_h, level_w = _floor_log2(row_hi - row_lo), _floor_log2(col_hi - col_lo)
    rows = jnp.stack([row_lo, row_hi - (1 << level_h)], -1)  # (k, out_h, 2) the two block starts
    cols = jnp.stack([col_lo, col_hi - (1 << level_w)], -1)  # (k, out_w, 2)
    rows, cols = jnp.clip(rows, 0, h - 1), jnp.clip(cols, 0, w - 1)
    level_w = level_w.clip(0)
    level_h = level_h.clip(0)
    levels_w = w.bit_length()
    # flat row of (level_h, level_w, image, y, x) in the table, for the 2 x 2 corner blocks of every bin
    level = level_h[:, :, None, None, None] * levels_w + level_w[:, None, :, None, None]  # (k, oh, ow, 1, 1)
    image_row = (level * n + batch[:, None, None, None, None]) * h + rows[:, :, None, :, None]
    corner = (image_row * w + cols[:, None, :, None, :]).reshape(-1)  # (k * oh * ow * 4,)

    values, positions = _block_max_table(lax.stop_gradient(features))
    values = values.reshape(-1, c)[corner].reshape(-1, 4, c)
    positions = positions.reshape(-1, c)[corner].reshape(-1, 4, c)
    best = jnp.max(values, axis=1, keepdims=True)
    first = jnp.min(jnp.where(values == best, positions, jnp.iinfo(jnp.int32).max), axis=1)  # (k*oh*ow, c)
    first = jnp.where(empty.reshape(-1, 1), 0, first)
    source = batch.repeat(out_h * out_w)[:, None] * (h * w) + first
    out = jnp.take_along_axis(features.reshape(n * h * w, c), source, axis=0)
    out = jnp.where(empty.reshape(-1, 1), jnp.zeros((), features.dtype), out)
    return out.reshape(-1, out_h, out_w, c)
