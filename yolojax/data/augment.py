"""The training augmentation chain as grain map transforms over a per-sample dict.

Order (the reference's v8_transforms): load (long side = imgsz) -> Mosaic (p=mosaic; else LetterBox to square) ->
CopyPaste -> RandomPerspective -> MixUp -> Albumentations-like blur/gray/CLAHE -> RandomHSV -> RandomFlip (ud, lr)
-> Format. CopyPaste needs instance segments, which these sources do not load, so it is a no-op (as in the
reference for box-only datasets).

Randomness: every stage draws from its own generator `np.random.default_rng([*seed_key, stage_id])`, where
`seed_key = (seed, epoch, index)` is carried by the element — so a record's augmentation is a function of
(seed, epoch, index, mosaic pool) only, whatever the worker or thread count. Mosaic / MixUp partners come from the
element's `pool`: the source indices of the surrounding window of the epoch order (the reference samples from a
buffer of recently loaded images; a window keeps decoding to about one read per image and stays deterministic).

Element dict keys: `index`, `pool` (k,) int, `seed_key` tuple, `imgsz`, `mosaic_on`; stages add `img` (h, w, c)
uint8 (BGRA until the HSV stage, since OpenCV warps 4 channels about twice as fast as 3; RGB after), `mosaic` (a
layout the warp renders, or None), `cls` (n,) int32, `boxes` (n, 4) float32 xyxy pixels, `border`, `flipped`
(lr, ud) already applied to the pixels, `flips` (lr, ud) the sample's flip decision (drawn once, by
RandomPerspective), `im_file`. With `hsv_on_device` (and some HSV gain), RandomHSV leaves `img`
BGR(A) and adds `hsv_lut` (256, 3) uint8: the train step applies it (yolojax.data.device.hsv), same pixels;
batching.collate drops the alpha as it writes the batch.
"""
from __future__ import annotations

import dataclasses
import threading

import grain
import numpy as np

from yolojax.data import mosaic as mosaic_ops
from yolojax.data import perspective as persp_ops
from yolojax.data import transforms as T
from yolojax.data.device import tables as device_tables
from yolojax.data.device.tables import MIX_PREFIX, WARP_PREFIX
from yolojax.data.labels import warn
from yolojax.data.store import ImageStore

STAGE_MOSAIC, STAGE_PERSPECTIVE, STAGE_MIXUP, STAGE_ALBUM, STAGE_HSV, STAGE_FLIP = 1, 2, 3, 4, 5, 6
MIXUP_PARTNER = 7


def stage_rng(seed_key, stage):
    """The generator of one stage of one sample: a pure function of (seed_key, stage)."""
    return np.random.default_rng([*seed_key, stage])


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation hyper-parameters, named and defaulted as in the reference's default.yaml."""

    mosaic: float = 1.0
    mixup: float = 0.0
    copy_paste: float = 0.0
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    mosaic9: bool = False
    albumentations: bool = False
    max_boxes: int = 100
    hsv_on_device: bool = False  # (yolojax) RandomHSV emits BGR + its lookup table; the train step converts
    warp_on_device: bool = False  # (yolojax) Mosaic + RandomPerspective pixels rendered in the train step


def flip_decision(seed_key, cfg: AugmentConfig):
    """(flip_lr, flip_ud) of a sample, drawn from the flip stage's generator (the reference's RandomFlip order:
    up-down first, then left-right)."""
    draws = stage_rng(seed_key, STAGE_FLIP).random(2)
    return bool(draws[1] < cfg.fliplr), bool(draws[0] < cfg.flipud)


class LoadMosaic(grain.transforms.Map):
    """Load the sample's image; with probability `mosaic` lay it out with partners from the pool (the canvas pixels
    are rendered by RandomPerspective, only where its warp reads them), else letterbox it to (s, s).

    With `warp_on_device` the pool is the sample's group of the batch (`slot` is its place there) and no pixels are
    touched: the letterbox becomes a one-tile layout, and `tile_slots` says which batch slot holds each tile."""

    def __init__(self, store: ImageStore, cfg: AugmentConfig):
        self.store, self.cfg = store, cfg

    def map(self, el):
        s = el["imgsz"]
        rng = stage_rng(el["seed_key"], STAGE_MOSAIC)
        use_mosaic = el["mosaic_on"] and rng.random() < self.cfg.mosaic
        if use_mosaic:
            partners = rng.choice(el["pool"], size=8 if self.cfg.mosaic9 else 3)
            tiles = [self.store.get(i, s) for i in [el["index"], *partners]]
            images, classes, boxes = ([t[k] for t in tiles] for k in range(3))
            shapes = [im.shape[:2] for im in images]
            if self.cfg.mosaic9:
                placements = mosaic_ops.layout9(shapes, s)
            else:
                placements = mosaic_ops.layout4(shapes, s, mosaic_ops.sample_mosaic_center(rng, s))
            cls, box = mosaic_ops.mosaic_labels(classes, boxes, placements, 2 * s)
            out = dict(el, img=None, mosaic=(images, placements, 2 * s), cls=cls, boxes=box,
                       border=mosaic_ops.mosaic_border(s), im_file=tiles[0][3]["im_file"], flipped=(False, False))
            if self.cfg.warp_on_device:
                out.update(img=images[0], tile_slots=[el["slot"], *pool_slots(el["pool"], partners)])
            return out
        image, cls, box, record = self.store.get(el["index"], s)
        if self.cfg.warp_on_device:
            placement, (dw, dh) = letterbox_layout(image.shape[:2], s)
            box = box + np.array([dw, dh, dw, dh], np.float32)
            return dict(el, img=image, mosaic=([image], [placement], s), tile_slots=[el["slot"]], cls=cls,
                        boxes=box.astype(np.float32), border=(0, 0), im_file=record["im_file"], flipped=(False, False))
        img, (r, _), (dw, dh) = T.letterbox(image, (s, s))
        box = box * r + np.array([dw, dh, dw, dh], np.float32)
        return dict(el, img=img, mosaic=None, cls=cls, boxes=box.astype(np.float32), border=(0, 0),
                    im_file=record["im_file"], flipped=(False, False))


def pool_slots(pool, indices):
    """Positions in `pool` (k,) of source `indices` (each present; a pool is a window of a permutation)."""
    where = {int(v): k for k, v in enumerate(pool)}
    return [where[int(i)] for i in indices]


def letterbox_layout(shape, imgsz):
    """The letterbox of an image whose long side is already `imgsz` (shape (h, w) pixels) as a one-tile canvas
    layout: (Placement of the image at `T.letterbox`'s pixel offset, (dw, dh) float padding per side in pixels, by
    which its boxes move). The same pixels as `T.letterbox`, which does not resize such an image."""
    h, w = shape
    if max(h, w) != imgsz:
        raise ValueError(f"letterbox_layout: image {w}x{h} does not have its long side at {imgsz}")
    dw, dh = (imgsz - w) / 2, (imgsz - h) / 2
    left, top = T.pad_before(dw), T.pad_before(dh)
    return mosaic_ops.Placement(left, top, left + w, top + h, 0, 0, left, top), (dw, dh)


class RandomPerspective(grain.transforms.Map):
    """Warp image and boxes (see yolojax.data.perspective); the sample's flips are folded into the warp. A mosaic
    layout is rendered here, only inside the window of the canvas that the warp reads.

    With `warp_on_device` (affine warps only), the pixels are left to the train step: `img` stays the sample's own
    tile and `warp` holds what `device.warp.render_warped` needs (tile slots, placements, the warp's
    source-coordinate tables), with exactly the CPU path's matrix and window."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self._local = threading.local()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state):
        self.__dict__.update(state, _local=threading.local())

    def _scratch(self, size):
        """A per-thread canvas buffer, reused: a fresh multi-MB array per sample costs more in page faults than the
        tiling. Safe because each canvas is consumed by the warp right after it is rendered, in the same thread."""
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < size:
            buf = self._local.buf = np.empty(size, np.uint8)
        return buf

    def map(self, el, flips=None):
        c = self.cfg
        rng = stage_rng(el["seed_key"], STAGE_PERSPECTIVE)
        mosaic = el.get("mosaic")
        in_shape = (mosaic[2], mosaic[2]) if mosaic else el["img"].shape[:2]
        params = persp_ops.sample_warp(rng, in_shape, el["border"], degrees=c.degrees, translate=c.translate,
                                       scale=c.scale, shear=c.shear, perspective=c.perspective)
        flip_lr, flip_ud = flip_decision(el["seed_key"], c) if flips is None else flips
        if c.warp_on_device:
            return self._plan(el, params, in_shape, (flip_lr, flip_ud))
        if not mosaic and persp_ops.is_identity(params, in_shape) and not (flip_lr or flip_ud):
            return dict(el, border=(0, 0), flips=(flip_lr, flip_ud))
        origin = (0, 0)
        img = el["img"]
        if mosaic:
            images, placements, size = mosaic
            window = persp_ops.source_window(params, in_shape)
            need = (window[3] - window[1]) * (window[2] - window[0]) * images[0].shape[2]
            img = mosaic_ops.render_canvas(images, placements, size, window, out=self._scratch(need))
            origin = window[:2]
        pixel_flip = persp_ops.flip_matrix(params.out_size, flip_lr, flip_ud)
        img = persp_ops.warp_image(img, params.matrix, params.out_size, params.is_perspective, pixel_flip=pixel_flip,
                                   origin=origin)
        cls, boxes, _ = persp_ops.warp_labels(el["cls"], el["boxes"], params)
        return dict(el, img=img, mosaic=None, cls=cls, boxes=boxes, border=(0, 0), flipped=(flip_lr, flip_ud),
                    flips=(flip_lr, flip_ud))

    def _plan(self, el, params, in_shape, flips):
        """The device render's inputs for this sample, and its labels (as the CPU path: an identity warp of an
        unflipped letterbox keeps every box, otherwise boxes go through `warp_labels`)."""
        images, placements, size = el["mosaic"]
        if params.is_perspective:
            raise ValueError("warp_on_device renders affine warps only; set perspective: 0 or warp_on_device: false")
        origin = persp_ops.source_window(params, in_shape)[:2] if len(placements) > 1 else (0, 0)
        pixel_flip = persp_ops.flip_matrix(params.out_size, *flips)
        tables = device_tables.affine_tables(params.matrix, params.out_size, origin, pixel_flip=pixel_flip)
        slots, rects = device_tables.tile_rows(el["tile_slots"], placements)
        if len(placements) == 1 and persp_ops.is_identity(params, in_shape) and not any(flips):
            cls, boxes = el["cls"], el["boxes"]
        else:
            cls, boxes, _ = persp_ops.warp_labels(el["cls"], el["boxes"], params)
        return dict(el, mosaic=None, cls=cls, boxes=boxes, border=(0, 0), flipped=flips, flips=flips,
                    out_size=params.out_size, warp={"slots": slots, "placements": rects, **tables})


class MixUp(grain.transforms.Map):
    """With probability `mixup`, blend with a pool partner that went through Mosaic + RandomPerspective itself:
    `img = λ·img1 + (1-λ)·img2`, λ ~ Beta(32, 32), labels concatenated.

    With `warp_on_device`, every sample gets the partner's render inputs (`warp` keys `mix_*`) and the blend as a
    lookup table (`mix_lut`, `transforms.mixup_table`); an unmixed sample is its own partner with ratio 1."""

    def __init__(self, load: LoadMosaic, warp: RandomPerspective, cfg: AugmentConfig):
        self.load, self.warp, self.cfg = load, warp, cfg

    def map(self, el):
        if not self.cfg.mixup > 0:
            return el
        rng = stage_rng(el["seed_key"], STAGE_MIXUP)
        if not rng.random() < self.cfg.mixup:
            return self._on_device(el, el["warp"], T.unmixed_table()) if self.cfg.warp_on_device else el
        partner_index = int(rng.choice(el["pool"]))
        partner = dict(el, index=partner_index, seed_key=(*el["seed_key"], MIXUP_PARTNER))
        if self.cfg.warp_on_device:
            partner["slot"] = pool_slots(el["pool"], [partner_index])[0]
        partner = self.warp.map(self.load.map(partner), flips=el["flipped"])
        ratio = rng.beta(32.0, 32.0)
        el = dict(el, cls=np.concatenate([el["cls"], partner["cls"]]),
                  boxes=np.concatenate([el["boxes"], partner["boxes"]]))
        if self.cfg.warp_on_device:
            return self._on_device(el, partner["warp"], T.mixup_table(ratio))
        return dict(el, img=T.mixup_images(el["img"], partner["img"], ratio))

    @staticmethod
    def _on_device(el, partner_warp, table):
        mix = {MIX_PREFIX + k: v for k, v in partner_warp.items()}
        return dict(el, warp={**el["warp"], **mix, MIX_PREFIX + "lut": table})


class Albumentations(grain.transforms.Map):
    """Blur / MedianBlur / ToGray / CLAHE at p=0.01 each (see transforms.blur_like_albumentations); on only when
    `albumentations` is set (the reference applies them only when the albumentations package is installed)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def map(self, el):
        if not self.cfg.albumentations:
            return el
        return dict(el, img=T.blur_like_albumentations(stage_rng(el["seed_key"], STAGE_ALBUM), T.to_bgr(el["img"])))


class RandomHSV(grain.transforms.Map):
    """Random hue / saturation / value gains; also converts BGR to RGB (the model's channel order).

    With `hsv_on_device` (and a non-zero gain), only the gains' lookup table is computed here: `hsv_lut` (256, 3)
    uint8 is added, for `device.hsv.apply_hsv_luts` in the train step, and `img` is left BGR or BGRA (collate writes
    it into the batch as BGR, dropping the alpha on the way)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def map(self, el):
        c = self.cfg
        if not (c.hsv_h or c.hsv_s or c.hsv_v):
            return dict(el, img=T.apply_hsv(el["img"], None, to_rgb=True))
        gains = T.sample_hsv_gains(stage_rng(el["seed_key"], STAGE_HSV), c.hsv_h, c.hsv_s, c.hsv_v)
        if c.hsv_on_device:
            return dict(el, hsv_lut=T.hsv_tables(gains)[:, 0, :])
        return dict(el, img=T.apply_hsv(el["img"], gains, to_rgb=True))


class RandomFlip(grain.transforms.Map):
    """Up-down (p=flipud) then left-right (p=fliplr) flips; pixels already flipped by the warp are not redone."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def map(self, el):
        flip_lr, flip_ud = el.get("flips") or flip_decision(el["seed_key"], self.cfg)
        img = el["img"]
        w, h = el.get("out_size") or img.shape[1::-1]
        done_lr, done_ud = el["flipped"]
        if flip_ud and not done_ud:
            img = img[::-1]
        if flip_lr and not done_lr:
            img = img[:, ::-1]
        boxes = T.flip_boxes(el["boxes"], (w, h), flip_lr, flip_ud)
        return dict(el, img=np.ascontiguousarray(img), boxes=boxes, flipped=(flip_lr, flip_ud))


class FormatTargets(grain.transforms.Map):
    """Pad / truncate labels to `max_boxes` rows: `bboxes` normalized xywh, `cls` int32, `mask` bool; `images`
    (h, w, 3) uint8 RGB, or BGR / BGRA with `hsv_lut` when RandomHSV left the colour change to the device."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def map(self, el):
        w, h = el.get("out_size") or el["img"].shape[1::-1]
        targets = T.boxes_to_targets(el["cls"], el["boxes"], (w, h), self.cfg.max_boxes)
        if targets.pop("num_dropped"):
            warn(f"{el['im_file']}: {len(el['cls'])} boxes after augmentation, more than max_boxes="
                 f"{self.cfg.max_boxes}; extra boxes dropped")
        out = {"images": el["img"], **targets}
        if "hsv_lut" in el:
            out["hsv_lut"] = el["hsv_lut"]
        out.update((WARP_PREFIX + k, v) for k, v in el.get("warp", {}).items())
        return out


def train_transforms(store: ImageStore, cfg: AugmentConfig):
    """The ordered list of grain map transforms for a training element spec."""
    load, warp = LoadMosaic(store, cfg), RandomPerspective(cfg)
    return [load, warp, MixUp(load, warp, cfg), Albumentations(cfg), RandomHSV(cfg), RandomFlip(cfg),
            FormatTargets(cfg)]
