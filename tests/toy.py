"""A tiny stand-in task (conv + BatchNorm + dense) and synthetic batches, for tests of the training machinery.

Not a detector: it regresses the mean ground-truth box of each image. Its loss has the reference's form
(per-image mean loss items, loss = sum(items) * batch), so data-parallel sums are exact.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolojax.train.config import load_config
from yolojax.train.loop import train


class ToyNet(nn.Module):
    """images float (b, h, w, 3) in [0, 1] -> (b, 4). `bn_axis` names a mesh axis for cross-device BN stats."""

    bn_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = True):
        for features in (8, 8):
            x = nn.Conv(features, (3, 3), strides=(2, 2), padding=1)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.97, epsilon=1e-3, axis_name=self.bn_axis)(x)
            x = nn.silu(x)
        return nn.Dense(4)(x.mean(axis=(1, 2)))


@dataclasses.dataclass(frozen=True)
class ToyTask:
    """`yolojax.detectors.DetectionTask` over ToyNet."""

    bn_axis: str | None = None
    name: str = "toy"
    loss_names: tuple[str, ...] = ("box", "size")
    num_classes: int = 1

    def spec(self) -> dict:
        return {"family": self.name}

    @property
    def net(self) -> ToyNet:
        return ToyNet(bn_axis=self.bn_axis)

    def init(self, key: jax.Array, image_hw: tuple[int, int]) -> dict:
        x = jnp.zeros((1, *image_hw, 3), jnp.float32)
        return dict(ToyNet().init(key, x, train=False))

    def loss_fn(self, params, model_state, batch, key):
        del key
        images = batch["images"].astype(jnp.float32) / 255.0
        pred, updated = self.net.apply({"params": params, **model_state}, images, train=True,
                                       mutable=["batch_stats"])
        mask = batch["mask"].astype(jnp.float32)[..., None]
        target = (batch["bboxes"] * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)  # (b, 4)
        err = (pred - target) ** 2
        items = jnp.stack([err[:, :2].mean(), err[:, 2:].mean()])
        return items.sum() * images.shape[0], {"items": items, "model_state": dict(updated)}

    def predict(self, variables, images, *, conf=0.001, iou=0.7, max_det=300, multi_label=False, classes=None,
                agnostic=False):
        del conf, iou, classes, agnostic
        b, h, w, _ = images.shape
        xywh = self.net.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
        xyxy = jnp.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], -1)
        boxes = jnp.zeros((b, max_det, 4)).at[:, 0].set(xyxy * jnp.array([w, h, w, h]))
        valid = jnp.zeros((b, max_det), bool).at[:, 0].set(True)
        return {"boxes": boxes, "scores": valid.astype(jnp.float32), "classes": jnp.zeros((b, max_det), jnp.int32),
                "valid": valid}


def toy_batch(seed: int, batch: int = 8, hw: int = 16, max_boxes: int = 6, num_boxes: int | None = None) -> dict:
    """Synthetic batch: images uint8 (b, hw, hw, 3), bboxes (b, m, 4) normalized xywh, cls (b, m), mask (b, m)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_boxes + 1, size=batch) if num_boxes is None else np.full(batch, num_boxes)
    mask = np.arange(max_boxes)[None, :] < counts[:, None]
    bboxes = rng.uniform(0.1, 0.9, size=(batch, max_boxes, 4)).astype(np.float32) * mask[..., None]
    images = rng.integers(0, 256, size=(batch, hw, hw, 3), dtype=np.uint8)
    return {"images": images, "bboxes": bboxes, "cls": np.zeros((batch, max_boxes), np.int32), "mask": mask}


class ToyData:
    """TrainData stand-in (see yolojax.train.feed): `batches_per_epoch` synthetic batches per epoch, a pure
    function of (seed, epoch, index); `data_state()` is the position in the epoch."""

    def __init__(self, seed: int = 0, batch: int = 8, hw: int = 16, batches_per_epoch: int = 4, num_boxes=None,
                 nan_from_epoch: int | None = None):
        self.seed, self.batch, self.hw, self.num_boxes = seed, batch, hw, num_boxes
        self.nan_from_epoch = nan_from_epoch  # epochs from this one on carry a NaN box (non-finite loss)
        self.batches_per_epoch, self.train_size = batches_per_epoch, batches_per_epoch * batch
        self.num_classes, self.names, self.size_buckets = 1, ("thing",), (hw,)
        self.val = [toy_batch(10_000 + seed, batch, hw)]
        self.on_device = ""
        self._position = 0

    def train_epoch(self, epoch: int, *, mosaic: bool, start_batch: int = 0, data_state=None):
        del mosaic
        self._position = int(data_state) if data_state is not None else start_batch
        while self._position < self.batches_per_epoch:
            index = self._position
            self._position += 1
            batch = toy_batch(self.seed * 1_000_003 + epoch * 1000 + index, self.batch, self.hw,
                              num_boxes=self.num_boxes)
            if self.nan_from_epoch is not None and epoch >= self.nan_from_epoch:
                batch["bboxes"][:, 0] = np.nan
            yield batch

    def data_state(self) -> int:
        return self._position

    def val_batches(self) -> list[dict]:
        return self.val

    def close(self) -> None:
        pass


@functools.partial(jax.jit, static_argnums=0)
def _toy_val_loss(task, variables, images, bboxes, mask):
    pred = task.net.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
    mask = mask[..., None]
    target = (bboxes * mask).sum(1) / jnp.maximum(mask.sum(1), 1)
    return jnp.mean((pred - target) ** 2)


def toy_evaluate(task: ToyTask, variables: dict, data: ToyData, cfg) -> dict:
    """Negative mean loss of the EMA model on the toy val batch, as 'fitness'."""
    del cfg
    batch = data.val[0]
    loss = float(_toy_val_loss(task, variables, batch["images"], batch["bboxes"], batch["mask"]))
    return {"val/loss": loss, "fitness": -loss}


def run_toy(argv: list[str]) -> int:
    """`python tests/toy.py [stop_at=N] key=value ...`: the real loop on ToyTask / ToyData (tests use it in
    subprocesses: resume in a new process, Ctrl-C, forced device counts). Prints the final iteration."""

    stop_at = [int(a.split("=", 1)[1]) for a in argv if a.startswith("stop_at=")]
    argv = [a for a in argv if not a.startswith("stop_at=")]
    base = ["cfg=none", "optimizer=SGD", "batch=8", "imgsz=32", "nbs=16", "workers=0", "plots=False"]
    cfg = load_config(base + argv)
    result = train(cfg, task=ToyTask(), data=ToyData(seed=cfg.seed, batch=cfg.batch), evaluate=toy_evaluate,
                   stop_at_iteration=stop_at[0] if stop_at else None, progress=False)
    print(f"ITERATIONS {result.iterations} INTERRUPTED {result.interrupted}", flush=True)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(run_toy(sys.argv[1:]))
