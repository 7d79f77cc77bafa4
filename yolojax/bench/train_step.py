"""Timing of the full training step (forward, assigner, losses, backward, optimizer, EMA) and, in the same run on the
same device, the reference's (ultralytics 8.2.103, PyTorch eager, fp16 AMP); `yolojax bench` (yolojax/cli/bench.py)
prints and writes the table.

Data is device-resident random images with random boxes (the same boxes on both sides), so the numbers measure the
step, not the input pipeline.
"""
from __future__ import annotations

import hashlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.bench.reference import random_targets
from yolojax.bench.timing import median_ms, queued_ms
from yolojax.detectors import YOLOv8Task
from yolojax.losses import detection_loss
from yolojax.train.ema import ema_update
from yolojax.train.optim import OptimizerPlan, build_optimizer, hyper_at
from yolojax.train.setup import build_training
from yolojax.train.state import VariablesLayout
from yolojax.train.step import make_mesh, replicate, shard_batch


def padded_targets(rng: np.random.Generator, batch: int, boxes_per_image: int, max_boxes: int, num_classes: int):
    """`random_targets` padded to `max_boxes` rows with a mask (the layout our pipeline produces)."""
    cls, bboxes, mask = random_targets(rng, batch, boxes_per_image, num_classes)
    pad = max_boxes - boxes_per_image
    return (np.pad(cls, ((0, 0), (0, pad))), np.pad(bboxes, ((0, 0), (0, pad), (0, 0))),
            np.pad(mask, ((0, 0), (0, pad))))


def sgd_plan(batch: int):
    """The reference's default SGD recipe past warmup (lr0 0.01, momentum 0.937, nesterov, wd 5e-4)."""
    return OptimizerPlan(name="SGD", lr0=0.01, momentum=0.937, target_momentum=0.937, weight_decay=5e-4,
                         warmup_bias_lr=0.1, warmup_momentum=0.8, warmup_iters=-1, nbs=batch, batch=batch,
                         epochs=100, lrf=0.01, cos_lr=False)


class SteppedState:
    """A compiled train step with its state between calls: `one()` runs a step on the same batch and returns its
    metrics (for timing loops); `compile_s` is the compile time, `phases_s` its parts (JAX's trace and lowering,
    then XLA's compile with the persistent cache's lookup and write)."""

    def __init__(self, step, state, batch, hyper):
        start = time.perf_counter()
        traced = step.trace(state, batch, hyper)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        lowered_at = time.perf_counter()
        self.compiled = lowered.compile()
        compiled_at = time.perf_counter()
        self.compile_s = compiled_at - start
        self.phases_s = {"trace": traced_at - start, "lower": lowered_at - traced_at,
                         "compile": compiled_at - lowered_at}
        self.state, self.batch, self.hyper = state, batch, hyper

    def one(self):
        self.state, metrics = self.compiled(self.state, self.batch, self.hyper)
        return metrics


def random_step_inputs(scale: str = "n", *, batch: int = 64, imgsz: int = 640, num_classes: int = 80,
                       boxes_per_image: int = 8, max_boxes: int = 16, dtype=jnp.bfloat16, seed: int = 0,
                       devices=None):
    """The train step of a fresh YOLOv8 of `scale` on `devices` (default: all) (`build_training`, the reference's
    SGD recipe) with a batch of random uint8 images (batch, imgsz, imgsz, 3) and random boxes padded to
    `max_boxes`, and the hyper-parameters past warmup. Returns (training, batch, hyper), each on the training's
    mesh."""
    task = YOLOv8Task(scale=scale, num_classes=num_classes, dtype=dtype)
    plan = sgd_plan(batch)
    run = build_training(task, plan, (imgsz, imgsz), seed=seed, mesh=make_mesh(devices))
    hyper = replicate(hyper_at(plan, 10_000, 10), run.mesh)
    rng = np.random.default_rng(seed)
    cls, bboxes, mask = padded_targets(rng, batch, boxes_per_image, max_boxes, num_classes)
    images = rng.integers(0, 256, size=(batch, imgsz, imgsz, 3), dtype=np.uint8)
    data = shard_batch({"images": images, "bboxes": bboxes, "cls": cls, "mask": mask}, run.mesh)
    return run, data, hyper


def repeat_digests(compiled, start, batch, hyper, *, repeats: int = 3, steps: int = 2) -> list[str]:
    """Run `steps` steps of the compiled step from a copy of the state `start`, `repeats` times; a digest (hex) of
    the state each time reached. Equal digests: the step repeats bit for bit."""
    digests = []
    for _ in range(repeats):
        state = jax.tree.map(lambda x: x.copy(), start)
        for _ in range(steps):
            state, _ = compiled(state, batch, hyper)
        digest = hashlib.sha256()
        for leaf in jax.tree.leaves(jax.device_get(state)):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        digests.append(digest.hexdigest()[:16])
    return digests


def time_train_step(scale: str = "n", *, batch: int = 64, imgsz: int = 640, num_classes: int = 80,
                    boxes_per_image: int = 8, max_boxes: int = 16, steps: int = 30, warmup: int = 5,
                    dtype=jnp.bfloat16, seed: int = 0) -> dict:
    """Time our jitted data-parallel train step on all local devices. Returns ms/step, img/s, compile s, memory."""
    run, data, hyper = random_step_inputs(scale, batch=batch, imgsz=imgsz, num_classes=num_classes,
                                          boxes_per_image=boxes_per_image, max_boxes=max_boxes, dtype=dtype,
                                          seed=seed)
    mesh = run.mesh
    stepped = SteppedState(run.step, run.state, data, hyper)
    ms = queued_ms(stepped.one, jax.block_until_ready, steps, rounds=1, warmup=warmup)
    finite = bool(stepped.one()["finite"])
    compile_s = stepped.compile_s
    stats = jax.local_devices()[0].memory_stats() or {}
    return {
        "impl": f"yolojax jit+shard_map {jnp.dtype(dtype).name}",
        "scale": scale, "batch": batch, "imgsz": imgsz, "max_boxes": max_boxes, "devices": mesh.size,
        "ms_per_step": ms, "img_per_s": batch / ms * 1e3, "compile_s": compile_s, "loss_finite": finite,
        "peak_mem_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
        "device": jax.local_devices()[0].device_kind,
    }


def time_components(scale: str = "n", *, batch: int = 64, imgsz: int = 640, num_classes: int = 80,
                    max_boxes: int = 16, dtype=jnp.bfloat16, seed: int = 0, repeats: int = 20) -> dict:
    """Where a step's time goes: network forward, network forward+backward, loss (assigner included)
    forward+backward on fixed head outputs, and optimizer + EMA. ms each, same device and sizes."""
    task = YOLOv8Task(scale=scale, num_classes=num_classes, dtype=dtype)
    model = task.model
    variables = task.init(jax.random.PRNGKey(seed), (imgsz, imgsz))
    params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
    rng = np.random.default_rng(seed)
    cls, bboxes, mask = padded_targets(rng, batch, min(8, max_boxes), max_boxes, num_classes)
    targets = {"cls": jnp.asarray(cls), "bboxes": jnp.asarray(bboxes), "mask": jnp.asarray(mask)}
    images = jnp.asarray(rng.integers(0, 256, size=(batch, imgsz, imgsz, 3), dtype=np.uint8))

    def forward(p, x):
        return model.apply({"params": p, **stats}, x.astype(dtype) / 255.0, train=True, mutable=["batch_stats"])

    def net_loss(p, x):  # a stand-in loss that touches every output, to time backward through the network alone
        feats, _ = forward(p, x)
        return sum(jnp.mean(f.astype(jnp.float32) ** 2) for f in feats)

    feats, _ = jax.jit(forward)(params, images)
    loss_grad = jax.jit(jax.grad(lambda f: detection_loss(f, targets, num_classes=num_classes)[0]))
    layout = VariablesLayout.of(variables)
    optimizer = build_optimizer(sgd_plan(batch), layout.group_ends)
    flat = {"params": layout.params.flatten(params), "model_state": layout.model_state.flatten(stats)}
    opt_state = optimizer.init(flat["params"])
    hyper = hyper_at(sgd_plan(batch), 10_000, 10)

    @jax.jit
    def optimizer_and_ema(p, o, g, ema):
        updates, o = optimizer.update(g, o, p, lr=hyper.lr, momentum=hyper.momentum)
        p = p + updates
        return p, o, ema_update(ema, {"params": p, "model_state": flat["model_state"]}, jnp.int32(100), 0.9999,
                                2000.0)

    def time(fn, *args):
        return median_ms(lambda: fn(*args), jax.block_until_ready, repeats, 1)

    return {
        "scale": scale, "batch": batch, "imgsz": imgsz, "max_boxes": max_boxes,
        "forward_ms": time(jax.jit(forward), params, images),
        "forward_backward_ms": time(jax.jit(jax.grad(net_loss)), params, images),
        "loss_fwd_bwd_ms": time(loss_grad, feats),
        "optimizer_ema_ms": time(optimizer_and_ema, flat["params"], opt_state, flat["params"], flat),
        "device": jax.local_devices()[0].device_kind,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| impl | scale | batch | imgsz | max_boxes | ms/step | img/s | compile s | peak GiB | device |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['scale']} | {r['batch']} | {r['imgsz']} | {r.get('max_boxes', '-')} | "
                     f"{r['ms_per_step']:.1f} | {r['img_per_s']:.0f} | {r.get('compile_s', float('nan')):.1f} | "
                     f"{r['peak_mem_gib']:.2f} | {r['device']} |")
    return "\n".join(lines)
