"""Greedy non-maximum suppression with fixed output shapes (jit- and vmap-friendly).

Algorithm (tiled greedy, the same kept set as `torchvision.ops.nms`):
  1. Sort the candidates by descending score (masked-out candidates last) and cut them into tiles of `tile_size`.
  2. For each tile, in order: drop the boxes that overlap an already selected box (a `(tile, max_output_size)` IoU
     block), then resolve the suppressions inside the tile by a fixed-point iteration on its `(tile, tile)` IoU
     matrix: `keep[i] = alive[i] and not any(keep[j] and iou[j, i] > t for j < i)`. Box `i`'s value is final after
     `depth(i) + 1` sweeps, where depth is the length of the longest suppression chain ending at `i` (at most the
     tile size, in practice a handful). The iteration has one fixed point, the sequential greedy pass, so it stops
     at the first sweep that changes nothing.
  3. Append the tile's kept boxes to the selection; stop when all valid candidates are consumed or
     `max_output_size` boxes are selected.
One loop does both levels: each step runs `SWEEPS_PER_STEP` sweeps on the current tile and commits the tile once a
sweep changes nothing. On a GPU every loop step waits for its condition on the host, so a step does several sweeps
unconditionally, and the first step runs before the loop: with at most one tile of candidates and short suppression
chains (the usual case) the loop's condition is read once.
Cost: O(n log n) for the sort plus O(n * (max_output_size + tile_size)) IoU evaluations.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from yolojax.ops.boxes import box_iou

SWEEPS_PER_STEP = 8


def _sweeps(keep, alive, pair_suppresses, count: int):
    """`count` fixed-point sweeps of the greedy keep mask inside one score-sorted tile.

    Args:
      keep: (t,) bool, the current iterate (any start converges).
      alive: (t,) bool, candidates not already suppressed.
      pair_suppresses: (t, t) bool, `[j, i]` true when j ranks before i and IoU(j, i) > threshold.
    Returns:
      keep: (t,) bool after the sweeps; changed: () bool, whether the last sweep changed it (False: converged).
    """
    previous = keep
    for _ in range(count):
        previous, keep = keep, alive & ~jnp.any(pair_suppresses & keep[:, None], axis=0)
    return keep, jnp.any(keep != previous)


def nms(boxes, scores, iou_threshold: float, max_output_size: int, *, candidate_mask=None, tile_size: int = 256):
    """Greedy NMS in descending score order with fixed-size output.

    Args:
      boxes: (n, 4) xyxy, any units (computed in float32).
      scores: (n,) float, higher is better.
      iou_threshold: a box is suppressed by a higher-scoring kept box when their IoU is strictly greater.
      max_output_size: number of output rows (static).
      candidate_mask: optional (n,) bool; False rows are ignored (padding, below the confidence threshold).
      tile_size: candidates processed per outer step (static); a speed knob, the result does not depend on it.
    Returns:
      keep: (max_output_size,) int32 indices into `n` of the kept boxes, in descending score; 0 in invalid rows.
      valid: (max_output_size,) bool, true for the first `min(num_kept, max_output_size)` rows.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must be (n, 4) xyxy, got shape {boxes.shape}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: scores must be (n,) = {boxes.shape[:1]}, got shape {scores.shape}")
    if max_output_size < 1:
        raise ValueError(f"nms: max_output_size must be >= 1, got {max_output_size}")
    n = boxes.shape[0]
    if n == 0:
        return jnp.zeros((max_output_size,), jnp.int32), jnp.zeros((max_output_size,), bool)
    if candidate_mask is None:
        candidate_mask = jnp.ones((n,), bool)
    tile = max(1, min(tile_size, n))
    num_tiles = -(-n // tile)
    pad = num_tiles * tile - n

    boxes = boxes.astype(jnp.float32)
    order = jnp.argsort(jnp.where(candidate_mask, -scores.astype(jnp.float32), jnp.inf), stable=True)
    order = jnp.pad(order.astype(jnp.int32), (0, pad))
    sorted_boxes = boxes[order]
    sorted_valid = jnp.pad(candidate_mask[order[:n]], (0, pad))
    tiles_needed = (jnp.sum(candidate_mask, dtype=jnp.int32) + tile - 1) // tile
    rank = jnp.arange(tile)
    earlier = rank[:, None] < rank[None, :]

    def step(state, first=False):
        t, count, sel_boxes, sel_idx, keep, fresh = state
        start = t * tile
        tile_boxes = lax.dynamic_slice_in_dim(sorted_boxes, start, tile)
        tile_valid = lax.dynamic_slice_in_dim(sorted_valid, start, tile)
        tile_idx = lax.dynamic_slice_in_dim(order, start, tile)
        if first:  # nothing selected yet
            alive = tile_valid
        else:
            selected = jnp.arange(max_output_size) < count
            overlaps_selected = (box_iou(tile_boxes, sel_boxes, eps=0.0) > iou_threshold) & selected[None, :]
            alive = tile_valid & ~jnp.any(overlaps_selected, axis=1)
        pair_suppresses = (box_iou(tile_boxes, tile_boxes, eps=0.0) > iou_threshold) & earlier
        start_from = (fresh & alive) | (~fresh & keep)  # not jnp.where: ONNX Runtime has no Where over booleans
        keep, changed = _sweeps(start_from, alive, pair_suppresses, SWEEPS_PER_STEP)
        commit = keep & ~changed
        slot = count + jnp.cumsum(commit) - 1
        # a box not committed gets an out-of-range slot of its own (dropped), so no two indices repeat. Declared
        # unique, the scatter stays a plain one: with repeats possible, XLA's deterministic mode on GPUs
        # (--xla_gpu_exclude_nondeterministic_ops, the train default) rewrites it, and validation inside GPU
        # training then scored well below the same weights validated without that mode.
        slot = jnp.where(commit & (slot < max_output_size), slot, max_output_size + rank)
        sel_boxes = sel_boxes.at[slot].set(tile_boxes, mode="drop", unique_indices=True)
        sel_idx = sel_idx.at[slot].set(tile_idx, mode="drop", unique_indices=True)
        count = jnp.minimum(count + jnp.sum(commit, dtype=jnp.int32), max_output_size)
        t = t + (~changed).astype(t.dtype)
        return t, count, sel_boxes, sel_idx, keep, ~changed  # a committed tile: the next one starts afresh

    def more_to_do(state):
        t, count, _, _, _, _ = state
        return (t < tiles_needed) & (count < max_output_size)

    # loop-carried constants are built `_like` an input so that they carry its shard_map varying axes
    zero = jnp.zeros_like(boxes, jnp.int32, shape=())
    init = (zero, zero, jnp.zeros_like(boxes, jnp.float32, shape=(max_output_size, 4)),
            jnp.zeros_like(zero, shape=(max_output_size,)), jnp.zeros_like(sorted_valid, shape=(tile,)),
            jnp.ones_like(sorted_valid, shape=()))
    # the first step needs no condition: with no candidates it commits nothing. It must hand XLA no large constant
    # to fold at compile time: its overlaps with the empty selection were one, (batch, tile, max_output_size)
    # elements under vmap, evaluated on the host for seconds; so it skips them and a fresh tile starts from `alive`.
    _, count, _, keep, _, _ = lax.while_loop(more_to_do, step, step(init, first=True))
    return keep, jnp.arange(max_output_size) < count


def batched_nms(boxes, scores, class_ids, iou_threshold: float, max_output_size: int, *, candidate_mask=None,
                tile_size: int = 256):
    """Class-aware NMS: boxes of different classes never suppress each other.

    Uses the coordinate-offset trick of `torchvision.ops.batched_nms`: every box is shifted by
    `class_id * (max_coordinate + 1)` so that boxes of different classes cannot overlap, then one `nms` runs.

    Args:
      boxes: (n, 4) xyxy.
      scores: (n,) float.
      class_ids: (n,) int class of each box.
      iou_threshold, max_output_size, candidate_mask, tile_size: as in `nms`.
    Returns:
      keep: (max_output_size,) int32 indices into `n`, descending score; valid: (max_output_size,) bool.
    """
    if class_ids.shape != boxes.shape[:1]:
        raise ValueError(f"batched_nms: class_ids must be (n,) = {boxes.shape[:1]}, got shape {class_ids.shape}")
    boxes = boxes.astype(jnp.float32)
    if candidate_mask is None:
        max_coordinate = jnp.max(boxes)
    else:
        max_coordinate = jnp.max(jnp.where(candidate_mask[:, None], boxes, -jnp.inf))
        max_coordinate = jnp.where(jnp.isfinite(max_coordinate), max_coordinate, 0.0)  # no candidates at all
    offsets = class_ids.astype(jnp.float32) * (max_coordinate + 1.0)
    return nms(boxes + offsets[:, None], scores, iou_threshold, max_output_size, candidate_mask=candidate_mask,
               tile_size=tile_size)


def batched_nms_images(boxes, scores, class_ids, iou_threshold: float, max_output_size: int, *,
                       candidate_mask=None, tile_size: int = 256):
    """`batched_nms` vmapped over a leading image axis: (b, n, 4), (b, n), (b, n) -> (b, k) keep and valid."""
    if candidate_mask is None:
        candidate_mask = jnp.ones(scores.shape, bool)
    run = lambda b, s, c, m: batched_nms(b, s, c, iou_threshold, max_output_size, candidate_mask=m,
                                         tile_size=tile_size)
    return jax.vmap(run)(boxes, scores, class_ids, candidate_mask)
