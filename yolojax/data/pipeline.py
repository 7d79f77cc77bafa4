"""`build_dataset(cfg, split, seed)`: fixed-shape batches from a grain pipeline, per epoch, checkpointable.

API used by the train loop and the validator:

    ds = build_dataset(cfg, "train", seed=0)     # or "val"
    ds.names, ds.num_classes, ds.num_images      # class names, count, usable images in the split
    ds.batch_size, ds.imgsz, ds.max_boxes
    ds.hsv_on_device                             # True: train batches carry `hsv_lut`, images are BGR (below)
    ds.summary                                   # label-scan counts (found / missing / empty / corrupt), to print
    ds.num_batches                               # batches per epoch (train drops the remainder; val pads it)
    ds.size_buckets                              # (imgsz,) or, with cfg multi_scale, a few stride multiples
    ds.mosaic_enabled(epoch)                     # False for the last `close_mosaic` of `epochs` epochs
    it = ds.iterator(epoch, imgsz=None, mosaic=None, workers=None)   # a grain DatasetIterator over the epoch's
                                                 # batches; mosaic None: mosaic_enabled(epoch); workers None:
                                                 # cfg workers (grain processes; 0 = threads in this process)
    it = ds.iterator(epoch, start_batch=k, epochs=n)   # batches of n epochs from batch k of `epoch`, one iterator
                                                 # (one set of worker processes): a batch is a function of its
                                                 # epoch and position alone, so any start gives the same batches
    it = ds.iterator(epoch, rows=(i, j))         # train: only rows i..j-1 of each batch are built (a process's
                                                 # share of the global batch); the same values as those rows of
                                                 # the whole batch
    for batch in it: ...
    state = it.get_state()                       # save with the train state; resume:
    it = ds.iterator(epoch); it.set_state(state)       # continues with the next batch, identical values
    it.close()                                   # frees worker processes (also done on garbage collection)

Train batch (numpy): `images` (b, s, s, 3) uint8 RGB, `bboxes` (b, max_boxes, 4) float32 normalized xywh,
`cls` (b, max_boxes) int32, `mask` (b, max_boxes) bool. The epoch order is a permutation drawn from
(seed, epoch); each sample's augmentation from (seed, epoch, index) — the same for any `workers` count.
With cfg `hsv_on_device` (and a non-zero hsv_h/s/v), RandomHSV's colour conversion is left to the accelerator:
`images` are then BGR and `hsv_lut` (b, 256, 3) uint8 holds each image's hue / saturation / value tables;
`yolojax.data.device.hsv.apply_hsv_luts(images, hsv_lut)` (the train step calls it) gives exactly the RGB images
of the CPU path. `hsv_on_device`: False (default), True, or "auto" (on when JAX's default backend is gpu / tpu,
and multi_scale is off: the multi-scale resize of the batch would otherwise come before the HSV change).
With cfg `warp_on_device` the Mosaic + RandomPerspective pixels are left to the accelerator too (the host only
loads images, draws the same random numbers and computes the labels): `images` (b, s, s, 3) are then the batch's
source tiles, each top-left in its slot, and `warp_slots` (b, 4) int32, `warp_placements` (b, 4, 6) int32 and the
warp's coordinate tables (`warp_*`, see yolojax.data.device.tables) say how to render each sample;
`yolojax.data.device.augment.finish_augmentation` renders them (with mixup > 0 also each sample's partner,
`warp_mix_*`, blended through its table `warp_mix_lut`), then applies `hsv_lut`, and gives exactly the CPU path's
images for the same mosaic partners. A sample's partners come from its own device's part of the batch
(batch / device count images) instead of a 16-sample window. Affine warps of 4-mosaics and letterboxes only:
`true` with mosaic9, copy_paste, perspective, albumentations, multi_scale or HSV on the CPU is an error;
"auto" turns it on for gpu / tpu when none of those is set and each device has at least 8 images.

Val batch: the same four arrays (letterboxed to (s, s), scaleup off, no augmentation, dataset order; with cfg
`rect: True`, the reference's rectangular val instead: images sorted by aspect ratio and each batch letterboxed to
its own (h, w), multiples of 32 with the long side about s, so a few shapes each compile once) plus host
metadata: `valid` (b,) bool (False on padding rows of the last batch), `image_id` (b,) object, `im_file` (b,) object,
`ori_shape` (b, 2) int32 (h0, w0), `ratio` (b, 2) float32 and `pad` (b, 2) float32 such that an original-image
point is `(x - pad) / ratio` (x then y), and the full ground truth, never truncated: `gt_cls` list of (n_i,) int32,
`gt_bboxes` list of (n_i, 4) float32 xyxy original pixels.

cfg: a mapping with the reference's default.yaml names (data, imgsz, batch, epochs, mosaic, mixup, copy_paste,
degrees, translate, scale, shear, perspective, flipud, fliplr, hsv_h, hsv_s, hsv_v, workers, cache, close_mosaic,
multi_scale, fraction, rect) plus `max_boxes` (100), `allow_background_only` (False: a train split without a single
labelled image raises `yolojax.data.sources.NoLabelsError`), `mosaic9` (False), `albumentations` (default: whether the
albumentations package is installed, as in the reference), `hsv_on_device`, `warp_on_device` (False; see above).
A key left out takes default.yaml's value (`DEFAULTS`).
`cache`: True / "ram" preloads every resized image; otherwise each process keeps an LRU cache of recent ones, and
"disk" also keeps each decoded image as a .npy file beside its image file (yolojax.data.sources; not for tfds).
`data`: a data yaml path (YOLO layout; for COCO JSON, add `{split}_json: instances.json` and make the
split the image folder), a name from yolojax/configs/data/ ("shapes", the default, is generated on first use; "coco";
"voc_tfds"), or "tfds:NAME" (a tfds data source; val reads the `validation` split).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import grain
import numpy as np
import yaml

from yolojax.configs import config_path
from yolojax.data import augment as A
from yolojax.data import transforms as T
from yolojax.data.batching import BatchOf, EpochPlan, RunBatches, train_order
from yolojax.data.device import options
from yolojax.data.labels import warn
from yolojax.data.shapes import ensure_shapes_dataset
from yolojax.data.sources import (
    CocoSource,
    DataError,
    DataNotFoundError,
    TfdsSource,
    YoloSource,
    load_data_yaml,
    require_labels,
    require_split,
)
from yolojax.data.store import ImageStore
from yolojax.data.workers import worker_iterator

# What a cfg without a key gets: default.yaml's value, as `yolojax train` would, for the keys the pipeline reads;
# a library default for the rest. hsv_on_device / warp_on_device are off here although default.yaml says auto: their
# batches need the consumer to finish the augmentation (the train step does), which a plain caller does not.
_DEFAULT_YAML = yaml.safe_load(config_path("default.yaml").read_text())
_READ_KEYS = ("data", "imgsz", "batch", "epochs", "workers", "cache", "close_mosaic", "multi_scale", "fraction",
              "allow_background_only",
              *(f.name for f in A.dataclasses.fields(A.AugmentConfig)))
DEFAULTS = {**{k: _DEFAULT_YAML[k] for k in _READ_KEYS if k in _DEFAULT_YAML},
            "albumentations": None, "rect": False, "hsv_on_device": False, "warp_on_device": False}
POOL_SIZE = 16  # mosaic / mixup partners come from a window of at least this many samples
WORKER_NICENESS = 0  # added to each worker process's nice value (yields the cores to the process feeding the device)
STRIDE = 32


CONFIG_DATA_DIR = config_path("data")


def resolve_data(data):
    """`data` -> (kind, value): ("tfds", name), ("yaml", path). Names without a .yaml suffix are looked up in the
    packaged yolojax/configs/data/; a data yaml with `generate: shapes` is generated (once) and replaced by the
    generated yaml."""
    if data is None:
        data = "shapes"
    data = str(data)
    if data.startswith("tfds:"):
        return "tfds", data[5:]
    path = Path(data)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DATA_DIR / f"{data}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in CONFIG_DATA_DIR.glob("*.yaml"))
            raise DataNotFoundError(f"data={data!r}: no data yaml {path} (known names: {', '.join(known)})")
    if not path.is_file():
        raise DataNotFoundError(f"data={data}: data yaml not found")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if raw.get("tfds"):
        return "tfds", raw["tfds"]
    if raw.get("generate") == "shapes":

        args = {k: raw[k] for k in ("seed", "num_train", "num_val", "imgsz") if k in raw}
        return "yaml", ensure_shapes_dataset(raw.get("root"), **args)
    return "yaml", path


def make_source(data, split):
    """A random-access source for `split` ("train" / "val") of `data` (see the module docstring)."""
    kind, value = resolve_data(data)
    if kind == "tfds":
        return TfdsSource(value, {"val": "validation"}.get(split, split))
    spec = load_data_yaml(value)
    with open(value) as f:
        raw = yaml.safe_load(f) or {}
    json_key = f"{split}_json"
    if json_key in raw:
        require_split(spec, split)
        json_file = Path(raw[json_key])
        return CocoSource(json_file if json_file.is_absolute() else Path(spec["root"]) / json_file, spec[split][0],
                          names=spec["names"])
    return YoloSource(value, split)


def augment_config(cfg) -> A.AugmentConfig:
    fields = {f.name for f in A.dataclasses.fields(A.AugmentConfig)}
    values = {k: cfg[k] for k in fields if k in cfg and cfg[k] is not None}
    if "albumentations" not in values:
        values["albumentations"] = importlib.util.find_spec("albumentations") is not None
    multi_scale = bool(cfg.get("multi_scale"))
    if "hsv_on_device" in values:
        values["hsv_on_device"] = options.resolve_hsv_on_device(values["hsv_on_device"], multi_scale)
    warp = values.pop("warp_on_device", False)
    aug = A.AugmentConfig(**values)
    if warp is False:
        return aug
    return A.dataclasses.replace(aug, warp_on_device=options.resolve_warp_on_device(
        warp, aug, multi_scale, options.device_group(int(cfg.get("batch", 16)))))


def rect_val_plan(shapes_hw, batch_size, imgsz, stride=STRIDE, pad=0.5):
    """The reference's rectangular val batches: images sorted by aspect ratio, one letterbox shape per batch.

    Args:
      shapes_hw: (n, 2) original (h, w) of each image.
      batch_size, imgsz, stride, pad: as the reference (pad 0.5 for val).
    Returns:
      order (n,) source indices in iteration order; batch_shapes (num_batches, 2) int (h, w) pixels, multiples of
      `stride`, the long side about imgsz (the few distinct shapes each compile once).
    """
    shapes_hw = np.asarray(shapes_hw, np.float64).reshape(-1, 2)
    aspect = shapes_hw[:, 0] / shapes_hw[:, 1]
    order = np.argsort(aspect, kind="stable")
    aspect = aspect[order]
    num_batches = math.ceil(len(order) / batch_size)
    shapes = np.ones((num_batches, 2))
    for i in range(num_batches):
        chunk = aspect[i * batch_size:(i + 1) * batch_size]
        if chunk.max() < 1:
            shapes[i] = [chunk.max(), 1]
        elif chunk.min() > 1:
            shapes[i] = [1, 1 / chunk.min()]
    return order, (np.ceil(shapes * imgsz / stride + pad).astype(int) * stride)


class _ValSample(grain.transforms.Map):
    """Position -> letterboxed image, fixed-size targets and host metadata (position >= n: a padding row).

    `order` maps positions to source indices; `batch_shapes` (num_batches, 2) gives each batch's letterbox (h, w)
    (rectangular val), else every batch is (imgsz, imgsz)."""

    def __init__(self, store, num_images, imgsz, max_boxes, batch_size, order=None, batch_shapes=None):
        self.store, self.num_images, self.imgsz, self.max_boxes = store, num_images, imgsz, max_boxes
        self.batch_size, self.order, self.batch_shapes = batch_size, order, batch_shapes

    def map(self, position):
        valid = position < self.num_images
        index = 0 if not valid else int(self.order[position]) if self.order is not None else position
        out_h, out_w = (self.imgsz, self.imgsz) if self.batch_shapes is None else \
            (int(v) for v in self.batch_shapes[position // self.batch_size])
        image, cls, boxes, record = self.store.get(index, self.imgsz)
        img, (r, _), (dw, dh) = T.letterbox(image, (out_h, out_w), scaleup=False)
        h0, w0 = record["ori_shape"]
        h, w = image.shape[:2]
        left, top = T.pad_before(dw), T.pad_before(dh)
        boxes = boxes * r + np.array([dw, dh, dw, dh], np.float32)
        targets = T.boxes_to_targets(cls, boxes, (out_w, out_h), self.max_boxes)
        targets.pop("num_dropped")
        if not valid:
            targets["mask"][:] = False
        return {
            "images": T.apply_hsv(img, None, to_rgb=True), **targets, "valid": valid,
            "image_id": record["image_id"], "im_file": record["im_file"],
            "ori_shape": np.array([h0, w0], np.int32),
            "ratio": np.array([w / w0 * r, h / h0 * r], np.float32), "pad": np.array([left, top], np.float32),
            "gt_cls": record["cls"] if valid else record["cls"][:0],
            "gt_bboxes": T.xywhn_to_xyxy(record["bboxes"] if valid else record["bboxes"][:0], w0, h0),
        }


class DetectionDataset:
    """One split, ready to iterate per epoch (API in the module docstring)."""

    def __init__(self, cfg, split, seed, source=None, preload=None):
        self.cfg = {**DEFAULTS, **dict(cfg)}
        self.split, self.seed, self.training = split, int(seed), split == "train"
        self.source = source if source is not None else make_source(self.cfg["data"], split)
        self.names = tuple(self.source.names)
        self.num_classes = len(self.names)
        self.num_images = len(self.source)
        if self.training and float(self.cfg["fraction"]) < 1:  # the reference keeps the first fraction of images
            self.num_images = max(1, round(self.num_images * float(self.cfg["fraction"])))
        if self.training and not self.cfg["allow_background_only"]:
            require_labels(self.source, self.num_images, split)
        self.imgsz = int(self.cfg["imgsz"])
        self.batch_size = int(self.cfg["batch"])
        self.max_boxes = int(self.cfg["max_boxes"])
        self.worker_niceness = WORKER_NICENESS
        self.augment = augment_config(self.cfg)
        self.store = ImageStore(self.source, bgra=not self.warp_on_device)  # device-rendered tiles stay BGR
        cache = self.cfg["cache"]
        if cache not in (True, False, "ram", "disk"):
            raise DataError(f"cache={cache!r}: use True or 'ram' (decoded images in memory), 'disk' (.npy files "
                             "beside the images) or False")
        if cache == "disk":
            if hasattr(self.source, "disk_cache"):
                self.source.disk_cache = True
            else:
                warn(f"cache=disk: {type(self.source).__name__} has no image files to keep .npy files beside; "
                     "images are decoded each time")
        if cache in (True, "ram"):
            if preload is None:
                self.store.preload(range(self.num_images), self.imgsz)
            else:  # e.g. one file per host for several processes
                preload(self.store, range(self.num_images), self.imgsz, split)
        if self.training and self.num_images < self.batch_size:
            raise DataError(f"{split}: {self.num_images} images is fewer than one batch of {self.batch_size} "
                            "(lower batch)")

    @property
    def summary(self) -> str:
        """One line on the split: images used and, for scanned sources, the label-scan counts."""
        scan = getattr(self.source, "summary", None)
        return scan or f"{self.split}: {self.num_images} images, {self.num_classes} classes"

    @property
    def hsv_on_device(self) -> bool:
        """Whether train batches are BGR with `hsv_lut` (the train step applies RandomHSV's colour change)."""
        a = self.augment
        return self.training and a.hsv_on_device and bool(a.hsv_h or a.hsv_s or a.hsv_v)

    @property
    def warp_on_device(self) -> bool:
        """Whether train batches hold the raw tiles and `warp_*` render inputs (see the module docstring)."""
        return self.training and self.augment.warp_on_device

    @property
    def num_batches(self) -> int:
        if self.training:
            return self.num_images // self.batch_size
        return math.ceil(self.num_images / self.batch_size)

    @property
    def size_buckets(self):
        if not (self.training and self.cfg["multi_scale"]):
            return (self.imgsz,)
        sizes = {max(STRIDE, int(round(self.imgsz * f / STRIDE)) * STRIDE) for f in (0.5, 0.75, 1.0, 1.25, 1.5)}
        return tuple(sorted(sizes))

    def mosaic_enabled(self, epoch: int) -> bool:
        return self.training and epoch < int(self.cfg["epochs"]) - int(self.cfg["close_mosaic"])

    def epoch_order(self, epoch: int):
        """(n,) int64 source indices in this epoch's order (a permutation for train, identity for val)."""
        if not self.training:
            return np.arange(self.num_images)
        return train_order(self.seed, epoch, self.num_images)

    def dataset(self, epoch: int, *, imgsz=None, mosaic=None, start_batch: int = 0, epochs: int = 1,
                rows: tuple[int, int] | None = None) -> grain.MapDataset:
        """The grain MapDataset of the batches of `epochs` epochs from `epoch`, from its batch `start_batch` (val:
        the one pass, from `start_batch`). `rows` (start, stop), train only: each batch holds just those rows
        (stop - start images) of the global batch of `batch` images."""
        imgsz = int(imgsz or self.imgsz)
        if rows is not None and not self.training:
            raise ValueError(f"rows={tuple(rows)}: only train batches are split between processes")
        if self.training:
            pool = options.device_group(self.batch_size) if self.warp_on_device else max(self.batch_size, POOL_SIZE)
            if self.warp_on_device and rows is not None and (rows[0] % pool or rows[1] % pool):
                raise ValueError(f"rows={tuple(rows)} with warp_on_device: a device-rendered mosaic takes its tiles "
                                 f"from its device's {pool} rows; the rows must be whole groups of {pool}")
            mosaic_until = int(self.cfg["epochs"]) - int(self.cfg["close_mosaic"])
            plan = EpochPlan(self.seed, self.num_images, self.batch_size, self.num_batches, pool, imgsz,
                             mosaic_until, None if mosaic is None else bool(mosaic))
            first = epoch * self.num_batches + start_batch
            indices = grain.MapDataset.range(first, (epoch + epochs) * self.num_batches)
            return indices.map(RunBatches(plan, A.train_transforms(self.store, self.augment), rows))
        order = shapes = None
        if self.cfg.get("rect") and hasattr(self.source, "records"):
            hw = [self.source.record(i)["ori_shape"] for i in range(self.num_images)]
            order, shapes = rect_val_plan(hw, self.batch_size, imgsz)
        sample = _ValSample(self.store, self.num_images, imgsz, self.max_boxes, self.batch_size, order, shapes)
        positions = grain.MapDataset.range(self.num_batches * self.batch_size).batch(self.batch_size, batch_fn=list)
        return positions.map(BatchOf([sample]))[start_batch:]

    def iterator(self, epoch: int, *, imgsz=None, mosaic=None, workers=None, threads=None, start_batch: int = 0,
                 epochs: int = 1, rows: tuple[int, int] | None = None):
        """A checkpointable iterator (`get_state()` / `set_state(state)`) over `dataset(epoch, ...)`'s batches."""
        workers = int(self.cfg["workers"] if workers is None else workers)
        # elements are whole batches: a worker process builds one at a time (the workers are the parallelism);
        # in-process, a few threads. The buffer counts batches (b64 at 640 px is 79 MB), so it stays small.
        threads = threads or (1 if workers > 0 else 4)
        read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=1 if workers > 0 else 2 * threads)
        ds = self.dataset(epoch, imgsz=imgsz, mosaic=mosaic, start_batch=start_batch, epochs=epochs, rows=rows)
        ds = ds.to_iter_dataset(read)
        if workers > 0:
            return worker_iterator(ds, workers, self.worker_niceness)
        return iter(ds)


def build_dataset(cfg, split, seed=0, *, source=None, preload=None) -> DetectionDataset:
    """See the module docstring. `source` overrides `cfg["data"]` (any object with the source interface).
    preload(store, indices, imgsz, split) replaces `store.preload(indices, imgsz)` for cache=ram."""
    return DetectionDataset(cfg, split, seed, source=source, preload=preload)
