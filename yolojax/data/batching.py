"""Batches of the train pipeline: a sample's plan (epoch order, mosaic partners' pool), collation, and the map from
a global batch index (epoch * batches per epoch + batch) to its batch, which lets one grain dataset span epochs."""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from yolojax.data import augment as A
from yolojax.data import transforms as T


class TrainSpec(grain.transforms.Map):
    """Position in the epoch -> element spec (index, pool, slot, seed_key, imgsz, mosaic_on): the pool is the
    aligned window of `pool_size` positions around the sample, `slot` the sample's place in it."""

    def __init__(self, order, pool_size, seed, epoch, imgsz, mosaic_on):
        self.order, self.pool_size = order, pool_size
        self.seed, self.epoch, self.imgsz, self.mosaic_on = seed, epoch, imgsz, mosaic_on

    def map(self, position):
        start = (position // self.pool_size) * self.pool_size
        pool = np.take(self.order, np.arange(start, start + self.pool_size), mode="wrap")
        index = int(self.order[position % len(self.order)])
        return {"index": index, "pool": pool, "slot": position - start, "seed_key": (self.seed, self.epoch, index),
                "imgsz": self.imgsz, "mosaic_on": self.mosaic_on}


def train_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """(num_images,) int64 source indices in the epoch's train order: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0]).permutation(num_images)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What fixes an epoch's samples: order, mosaic partners' pool size, image size, mosaic on or off (`mosaic`
    None: on for epochs before `mosaic_until`)."""

    seed: int
    num_images: int
    batch_size: int
    batches: int
    pool: int
    imgsz: int
    mosaic_until: int
    mosaic: bool | None = None

    def spec(self, epoch: int) -> TrainSpec:
        mosaic_on = epoch < self.mosaic_until if self.mosaic is None else self.mosaic
        return TrainSpec(train_order(self.seed, epoch, self.num_images), self.pool, self.seed, epoch, self.imgsz,
                         mosaic_on)


class RunBatches(grain.transforms.Map):
    """Global batch index (epoch * batches per epoch + batch) -> that batch: one dataset spans epochs, so one set of
    worker processes serves a whole run. A worker builds an epoch's plan on its first batch of that epoch.

    `rows` (start, stop): build only those rows of each batch (a process's share in a multi-process run). A sample is
    a function of its position in the epoch alone, so the rows equal the same rows of the whole batch."""

    def __init__(self, plan: EpochPlan, transforms, rows: tuple[int, int] | None = None):
        self.plan, self.transforms = plan, tuple(transforms)
        self.rows = check_rows(rows, plan.batch_size)
        self._epoch = (None, None)

    def map(self, index):
        epoch, batch = divmod(int(index), self.plan.batches)
        cached, batch_of = self._epoch
        if cached != epoch:
            batch_of = BatchOf([self.plan.spec(epoch), *self.transforms])
            self._epoch = (epoch, batch_of)
        first = batch * self.plan.batch_size
        start, stop = self.rows
        return batch_of.map(range(first + start, first + stop))


def check_rows(rows: tuple[int, int] | None, batch_size: int) -> tuple[int, int]:
    """`rows` (start, stop) of a batch of `batch_size`, checked; None: all of them."""
    if rows is None:
        return 0, batch_size
    start, stop = (int(r) for r in rows)
    if not 0 <= start < stop <= batch_size:
        raise ValueError(f"rows={tuple(rows)}: not a non-empty range of a batch of {batch_size} (0 <= start < stop "
                         f"<= {batch_size})")
    return start, stop


ARRAY_KEYS = ("images", "bboxes", "cls", "mask")


def stack_images(images, side=None):
    """(b, h, w, 3) uint8 from b images (h, w, 3), or (h, w, 4) BGRA whose alpha is dropped on the way (BGR out):
    each image is written once, straight into the batch. With `side`, images of up to (side, side) go top-left in
    (b, side, side, 3) slots (device-rendered batches: the tiles; the rest of a slot is zero and never read)."""
    if side is None:
        out = np.empty((len(images), *images[0].shape[:2], 3), np.uint8)
    else:
        out = np.zeros((len(images), side, side, 3), np.uint8)
    for slot, image in zip(out, images):
        T.to_bgr(image, out=slot[:image.shape[0], :image.shape[1]])
    return out


def collate(elements):
    """Stack a list of element dicts: arrays stacked on a new axis 0 (`images` through `stack_images`); host
    objects gathered (see module doc)."""
    extra = tuple(k for k in elements[0] if k == "hsv_lut" or k.startswith(A.WARP_PREFIX))
    keys = ARRAY_KEYS[1:] + extra
    images = [e["images"] for e in elements]
    side = max(max(im.shape[:2]) for im in images) if A.WARP_PREFIX + "slots" in elements[0] else None
    out = {"images": stack_images(images, side)}
    out.update((k, np.stack([e[k] for e in elements])) for k in keys)
    if "valid" in elements[0]:
        out["valid"] = np.array([e["valid"] for e in elements], bool)
        out["ori_shape"] = np.stack([e["ori_shape"] for e in elements])
        out["ratio"] = np.stack([e["ratio"] for e in elements])
        out["pad"] = np.stack([e["pad"] for e in elements])
        for key in ("image_id", "im_file"):
            column = np.empty(len(elements), object)
            column[:] = [e[key] for e in elements]
            out[key] = column
        out["gt_cls"] = [e["gt_cls"] for e in elements]
        out["gt_bboxes"] = [e["gt_bboxes"] for e in elements]
    return out


class BatchOf(grain.transforms.Map):
    """Positions (b,) -> one collated batch: each position through `transforms` (grain maps) in turn. The pipeline
    batches positions first, so grain handles one element per batch instead of one per map per sample."""

    def __init__(self, transforms):
        self.transforms = tuple(transforms)

    def map(self, positions):
        elements = []
        for position in positions:
            el = int(position)
            for transform in self.transforms:
                el = transform.map(el)
            elements.append(el)
        return collate(elements)
