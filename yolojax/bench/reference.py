"""Timing of the reference's (ultralytics, PyTorch, fp16 AMP; eager or under `torch.compile`) training step, for the
speed benchmarks. The version is whichever ultralytics is importable: 8.2.103 (the parity oracle) or a newer one.

I/O-free apart from the optional torch import; used by `yolojax bench` / benchmarks/scripts/bench_train.py to time the
reference on the same machine, in the same run, as our step.
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np


def random_targets(rng: np.random.Generator, batch: int, boxes_per_image: int, num_classes: int):
    """Random ground truth, the same for both sides of a benchmark.

    Returns:
      cls: (b, m) int32 class ids, bboxes: (b, m, 4) normalized xywh, mask: (b, m) bool with m = boxes_per_image
      (every row valid).
    """
    centres = rng.uniform(0.15, 0.85, size=(batch, boxes_per_image, 2))
    sizes = rng.uniform(0.03, 0.3, size=(batch, boxes_per_image, 2))
    bboxes = np.concatenate([centres, sizes], axis=-1).astype(np.float32)
    cls = rng.integers(0, num_classes, size=(batch, boxes_per_image)).astype(np.int32)
    mask = np.ones((batch, boxes_per_image), dtype=bool)
    return cls, bboxes, mask


def _join_process_group():
    """(rank, world size, device) of this process: torch.distributed over NCCL when launched by torchrun with
    several processes, else the single current CUDA device."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda")
    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl")
    return dist.get_rank(), world, torch.device("cuda", local_rank)


def time_reference_train_step(scale: str = "n", *, batch: int = 64, imgsz: int = 640, num_classes: int = 80,
                              boxes_per_image: int = 8, steps: int = 30, warmup: int = 10, seed: int = 0,
                              compile: bool = False) -> dict:
    """Median wall time of the reference's full training step on the current CUDA device.

    The step is what its trainer does per batch: AMP fp16 forward + v8DetectionLoss, scaled backward, unscale,
    clip at norm 10, SGD(nesterov) step, scaler update, zero_grad and ModelEMA update. Data is GPU-resident.
    `compile=True` runs the model's forward through `torch.compile` and its loss eagerly, as the newest reference's
    trainer does with `compile=True` (default mode, inductor; the compile happens in the warmup, which then has 3
    extra steps). Launched by torchrun with several processes, each process runs `batch`
    images on its own GPU through DistributedDataParallel and multiplies the loss by the world size, as the
    reference's trainer does; the result counts the images of all processes.
    """
    import torch
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    rank, world, device = _join_process_group()
    torch.manual_seed(seed)
    model = DetectionModel(f"yolov8{scale}.yaml", nc=num_classes, verbose=False).to(device).train()
    model.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    trained = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    if compile:  # as the reference's trainer compiles: the model (default mode, inductor); the loss stays eager
        trained = torch.compile(trained, mode="default", backend="inductor")
        warmup += 3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    scaler = torch.cuda.amp.GradScaler(enabled=True)
    ema = ModelEMA(model)

    rng = np.random.default_rng(seed + rank)
    cls, bboxes, mask = random_targets(rng, batch, boxes_per_image, num_classes)
    batch_idx = np.repeat(np.arange(batch), boxes_per_image)
    data = {
        "img": torch.rand(batch, 3, imgsz, imgsz, device=device),
        "batch_idx": torch.as_tensor(batch_idx, dtype=torch.float32, device=device),
        "cls": torch.as_tensor(cls.reshape(-1, 1), dtype=torch.float32, device=device),
        "bboxes": torch.as_tensor(bboxes.reshape(-1, 4), device=device),
    }

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            if compile:
                loss, _ = model.loss(data, trained(data["img"]))
            else:
                loss, _ = trained(data)  # DetectionModel.forward(dict) is its loss; through DDP for its gradient hooks
        loss = loss.sum()  # 8.2 returns the summed loss, 8.4 the vector of its terms (its trainer sums it)
        scaler.scale(loss * world).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        ema.update(model)

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    ms = float(np.median(times) * 1e3)
    return {
        "impl": (f"ultralytics-{ultralytics.__version__} {'torch.compile' if compile else 'eager'} fp16 AMP"
                 + (f" DDP x{world}" if world > 1 else "")),
        "warmup_s": warmup_s,
        "scale": scale, "batch": batch * world, "imgsz": imgsz, "devices": world, "rank": rank,
        "ms_per_step": ms, "img_per_s": batch * world / ms * 1e3,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "device": torch.cuda.get_device_name(),
    }
