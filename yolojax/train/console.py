"""What `yolojax train` prints, in the reference trainer's layout: the model summary, a header of column names
before each epoch's progress bar (Epoch, accelerator memory, the task's losses, Instances, Size), and the
validation lines the evaluator formats. Printing and formatting only; the loop decides when.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.xla_flags import LOAD_TUNED_FLAG

COLUMN = "%11s"
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


# ------------------------------------------------------------------------------------------------ model summary
def count_parameters(params: Any) -> int:
    """Number of scalars in a parameter pytree (arrays or `jax.ShapeDtypeStruct`s)."""
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


def count_layers(params: Any) -> int:
    """Modules that hold parameters directly (each convolution, normalization, dense layer): the distinct parents
    of the parameter leaves. The reference counts every torch module (containers and activations too), so its
    number is larger for the same network."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return len({tuple(str(key) for key in path[:-1]) for path, _ in paths})


def forward_gflops(task: Any, variables: dict, imgsz: int) -> float | None:
    """GFLOPs of one forward pass of the task's network on a (1, imgsz, imgsz, 3) image, eval mode, from XLA's
    cost analysis of the lowered (uncompiled) computation: a multiply-add counts 2, element-wise ops count too,
    post-processing (NMS) is not part of it (nor, for the two-stage task, its per-RoI box head: `model.apply` is the
    backbone and RPN). None when the task has no linen `model` or the analysis has no count.

    The reference (thop) counts the same multiply-adds x 2 of its convolutions at a 32-pixel input, scaled to imgsz.
    """
    model = getattr(task, "model", None)
    if not hasattr(model, "apply"):
        return None
    avals = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), variables)
    image = jax.ShapeDtypeStruct((1, imgsz, imgsz, 3), getattr(task, "dtype", jnp.float32))
    cost = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(avals, image).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) / 1e9 if flops else None


def model_name(task: Any) -> str:
    """`YOLOv8n`, `faster_rcnn`, ...: the family, with the scale for YOLO families."""
    spec = task.spec()
    name = str(spec.get("family", task.name))
    if name.startswith("yolo") and "scale" in spec:
        name = f"{name}{spec['scale']}".replace("yolo", "YOLO")
    return name


def model_summary(task: Any, variables: dict, imgsz: int) -> str:
    """`YOLOv8n summary: 120 layers, 3,157,184 parameters, 3,157,184 gradients, 8.67 GFLOPs at 640x640`.

    Every parameter is trained (yolojax freezes none), so gradients equal parameters; running statistics
    (batch_stats) are not parameters. See `count_layers` and `forward_gflops` for how those are counted.
    """
    n = count_parameters(variables["params"])
    flops = forward_gflops(task, variables, imgsz)
    shown = f", {flops:.3g} GFLOPs at {imgsz}x{imgsz}" if flops else ""
    return (f"{model_name(task)} summary: {count_layers(variables['params']):,} layers, {n:,} parameters, "
            f"{n:,} gradients{shown}")


# ------------------------------------------------------------------------------------------------ progress bar
def memory_column(device: Any) -> str | None:
    """`GPU_mem` / `TPU_mem` when the device reports its memory use, else None (CPU: the column is left out)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return f"{device.platform.upper()}_mem" if stats else None


def memory_gb(device: Any) -> float:
    """Peak bytes the device's allocator handed out so far, in GB (1e9 bytes)."""
    stats = device.memory_stats() or {}
    return float(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) / 1e9


def header(loss_names: Sequence[str], memory: str | None) -> str:
    """The column names above the epoch bars: Epoch, [GPU_mem], <name>_loss..., Instances, Size."""
    names = ["Epoch", *([memory] if memory else []), *(f"{n}_loss" for n in loss_names), "Instances", "Size"]
    return (COLUMN * len(names)) % tuple(names)


def step_columns(epoch_text: str, memory: float | None, losses: Sequence[float], instances: int, size: int) -> str:
    """One bar's values under `header`: epoch `3/18`, memory `1.23G`, running mean losses, boxes in the batch and
    image size, in %11s / %11.4g columns."""
    mem = [f"{memory:.3g}G"] if memory is not None else []
    text = (COLUMN * (1 + len(mem))) % (epoch_text, *mem)
    return text + ("%11.4g" * (len(losses) + 2)) % (*(float(v) for v in losses), instances, size)


class EpochBar:
    """The header line, then a tqdm bar (to stderr) whose description shows `step_columns`; nothing when disabled."""

    def __init__(self, loss_names: Sequence[str], device: Any, total: int, initial: int, epoch_text: str,
                 enabled: bool):
        self.epoch_text, self.device, self.bar = epoch_text, device, None
        if not enabled:
            return
        from tqdm import tqdm

        self.memory = memory_column(device)
        print("\n" + header(loss_names, self.memory), flush=True)
        self.bar = tqdm(total=total, initial=initial, bar_format=BAR_FORMAT, dynamic_ncols=True, leave=True)

    @property
    def enabled(self) -> bool:
        return self.bar is not None

    def show(self, losses: Sequence[float], instances: int, size: int) -> None:
        """Advance one step with the running mean losses, the step's box count and image size."""
        if self.bar is None:
            return
        memory = memory_gb(self.device) if self.memory else None
        self.bar.set_description_str(step_columns(self.epoch_text, memory, losses, instances, size), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------- epoch summaries
def epoch_lines(row: dict, table: str | None) -> str:
    """What follows an epoch's bar: the evaluator's table lines when it gave some, else the row's train and metric
    values as key=value (evaluators without a table, e.g. the tests' stand-ins)."""
    if table:
        return table
    shown = {k: v for k, v in row.items() if k.startswith(("metrics/", "train/", "val/"))}
    return f"epoch {row['epoch']}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items())


def tuning_hint(deterministic: bool, devices: Sequence[Any], xla_flags: str) -> str | None:
    """A line suggesting `yolojax autotune` for deterministic training on GPUs that loads no tuned convolutions."""
    if not deterministic or LOAD_TUNED_FLAG in xla_flags or not any(d.platform == "gpu" for d in devices):
        return None
    return ("deterministic: each convolution runs the algorithm cuDNN ranks first; `yolojax autotune` once on this "
            "machine, with this run's model scale, batch per GPU, imgsz and nc, makes the step ~10% faster")


def completed(epochs: int, seconds: float) -> str:
    return f"\n{epochs} epochs completed in {seconds / 3600:.3f} hours."
