"""Same-start training trajectory: yolojax against the reference (ultralytics 8.2.103) over N iterations.

Both start from the same weights (the reference's fresh DetectionModel, imported with yolojax.convert) and see the
same batches (our pipeline's, handed to the reference in its own batch format). Ours runs the real train step
(yolojax.train.step); the reference runs its own pieces: DetectionModel and its v8DetectionLoss, the optimizer its
trainer's `build_optimizer` makes (torch.optim), its gradient clipping and ModelEMA; the per-iteration lr, momentum
and accumulate (the trainer's inline warmup) come from yolojax.train.optim.hyper_at, whose values are tested equal
to the reference's. A second reference, its weights nudged by a relative 1e-6, gives the noise floor: how far
the reference drifts from itself under rounding-sized changes.

    python benchmarks/scripts/check_trajectory.py --iters 300 --imgsz 128 --batch 8 --optimizer SGD AdamW \
        --out benchmarks/2026-11-26_trajectory
    ... --adam-eps 1e-6 --tag _eps1e-6        # a larger Adam eps on both sides
    ... --fp64 --tag _fp64                    # both sides in float64

Writes OUT/trajectory_<optimizer><tag>.json (per-iteration losses and loss ratios; per-layer parameter distances
every --every iterations) and a .png of the curves. Per layer (the reference's `model.<i>`), the parameter distance
is ||a - b|| / ||ref - start||: the gap between two runs as a share of how far the reference has moved.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_VERBOSE", "False")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from yolojax.convert.mapping import state_dict_to_variables, to_torch_layout, torch_key  # noqa: E402
from yolojax.convert.reference import build_reference_model, reference_state_dict  # noqa: E402
from yolojax.data import build_dataset, ensure_shapes_dataset  # noqa: E402
from yolojax.detectors import YOLOv8Task  # noqa: E402
from yolojax.train.config import load_config  # noqa: E402
from yolojax.train.optim import (  # noqa: E402
    GROUP_BIAS,
    GROUP_DECAY,
    GROUP_NORM,
    clip_by_global_norm_torch,
    grouped_adam,
    grouped_sgd,
    hyper_at,
    plan_optimizer,
)
from yolojax.train.state import VariablesLayout, create_state  # noqa: E402
from yolojax.train.step import build_train_step, make_mesh, replicate, shard_batch  # noqa: E402

# Recipes: the `yolojax train` shapes recipe (AdamW), and the same with the reference's SGD defaults.
RECIPES = {
    "AdamW": ["optimizer=AdamW"],
    "SGD": ["optimizer=SGD", "lr0=0.01", "momentum=0.937", "warmup_bias_lr=0.1"],
}


def recipe_config(optimizer: str, data: str, imgsz: int, batch: int):
    return load_config([f"data={data}", f"imgsz={imgsz}", f"batch={batch}", "workers=0", *RECIPES[optimizer]])


def collect_batches(cfg, iterations: int, seed: int) -> tuple[list[dict], int, int, int]:
    """The first `iterations` train batches of the recipe's pipeline (epoch after epoch) ->
    (batches, batches per epoch, train images, classes)."""
    data = build_dataset(cfg, "train", seed)
    batches, epoch = [], 0
    while len(batches) < iterations:
        it = data.iterator(epoch)
        for batch in it:
            batches.append({k: np.asarray(batch[k]) for k in ("images", "bboxes", "cls", "mask")})
            if len(batches) == iterations:
                break
        it.close()
        epoch += 1
    return batches, data.num_batches, data.num_images, data.num_classes


def reference_batch(batch: dict, dtype):
    """Our batch (images uint8 NHWC, padded normalized-xywh boxes) -> the reference trainer's preprocessed batch:
    img float (b, 3, h, w) in [0, 1], batch_idx (n,), cls (n, 1), bboxes (n, 4) normalized xywh."""
    import torch

    rows, cols = np.nonzero(batch["mask"])
    img = torch.from_numpy(np.ascontiguousarray(batch["images"].transpose(0, 3, 1, 2))).to(dtype) / 255
    return {"img": img, "batch_idx": torch.as_tensor(rows, dtype=dtype),
            "cls": torch.as_tensor(batch["cls"][rows, cols, None], dtype=dtype),
            "bboxes": torch.as_tensor(batch["bboxes"][rows, cols], dtype=dtype)}


class ReferenceRun:
    """The reference's training iteration (ultralytics engine/trainer.py `_do_train` / `optimizer_step`) around its
    own model, loss, optimizer and EMA."""

    def __init__(self, model, plan, adam_eps: float):
        import torch
        from ultralytics.engine.trainer import BaseTrainer
        from ultralytics.utils.torch_utils import ModelEMA

        self.torch, self.model = torch, model.train()
        model.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
        trainer = SimpleNamespace(args=SimpleNamespace(warmup_bias_lr=plan.warmup_bias_lr))
        self.optimizer = BaseTrainer.build_optimizer(trainer, model, name=plan.name, lr=plan.lr0,
                                                     momentum=plan.momentum, decay=plan.weight_decay)
        for group in self.optimizer.param_groups:
            if "eps" in group:
                group["eps"] = adam_eps
        self.ema = ModelEMA(model)
        self.last_opt_step = -1

    def step(self, batch: dict, hyper, iteration: int) -> float:
        """One iteration: loss, backward, and (every `accumulate`) clip + optimizer step + EMA. Returns the loss."""
        # the reference's param groups are (bias, decay weights, norm weights); ours (decay, norm, bias)
        for group, lr in zip(self.optimizer.param_groups, hyper.lr[[GROUP_BIAS, GROUP_DECAY, GROUP_NORM]]):
            group["lr"] = float(lr)
            if "momentum" in group:
                group["momentum"] = float(hyper.momentum)
        loss, _ = self.model(batch)
        loss.backward()
        if iteration - self.last_opt_step >= int(hyper.accumulate):
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.ema.update(self.model)
            self.last_opt_step = iteration
        return float(loss.detach())

    def params(self) -> dict:
        """The trained parameters (the fixed DFL bins left out), float64 numpy by state_dict name."""
        return {k: p.detach().double().numpy().copy() for k, p in self.model.named_parameters() if p.requires_grad}


def nudged(model, scale: float, seed: int):
    """A copy of `model` with every weight multiplied by (1 + scale * N(0, 1))."""
    import torch

    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return twin


def build_ours(task, plan, variables, adam_eps: float, fp64: bool):
    """(state, step) of our real train step from `variables`; fp64 casts the whole state and exchanges nothing
    (one device: the flat exchange would round through float32)."""
    group_ends = VariablesLayout.of(variables).group_ends
    if plan.name == "SGD":
        inner = grouped_sgd(group_ends, plan.weight_decay)
    else:
        inner = grouped_adam(group_ends, plan.weight_decay, plan.momentum, decoupled=plan.name == "AdamW", eps=adam_eps)
    optimizer = optax.chain(clip_by_global_norm_torch(plan.grad_clip), inner)
    state = jax.jit(create_state, static_argnums=1)(variables, optimizer, jax.random.PRNGKey(0))
    if fp64:
        state = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    mesh = make_mesh(jax.devices()[:1])
    step = build_train_step(task.loss_fn, optimizer, mesh, exchange="none" if fp64 else "flat")
    return replicate(state, mesh), step, mesh


def layer_of(key: str) -> str:
    return ".".join(key.split(".")[:2])  # model.<i>


def layer_distances(a: dict, b: dict, start: dict) -> dict:
    """Per layer ||a - b|| / ||b - start|| over its parameters (reference state_dict names)."""
    num, den = {}, {}
    for key, ref in b.items():
        layer = layer_of(key)
        num[layer] = num.get(layer, 0.0) + float(np.sum((a[key] - ref) ** 2))
        den[layer] = den.get(layer, 0.0) + float(np.sum((ref - start[key]) ** 2))
    return {k: float(np.sqrt(num[k] / den[k])) if den[k] > 0 else float(np.sqrt(num[k])) for k in num}


def run_trajectory(optimizer: str, *, iterations: int, imgsz: int, batch: int, scale: str = "n", data: str = "shapes",
                   seed: int = 0, nudge: float = 1e-6, adam_eps: float = 1e-8, fp64: bool = False,
                   every: int = 10, fast_compile: bool = False, checkpoint=None, log=print) -> dict:
    """Run both implementations (and the nudged reference) for `iterations` iterations. Returns the record that
    the JSON holds: per-iteration losses of ours / reference / nudged reference, their ratios to the reference,
    and per-layer parameter distances (ours and nudged, against the reference) every `every` iterations.
    fast_compile: compile our step with LLVM optimization off (half the compile time; for a few iterations).
    checkpoint(record): called with the record so far every 5 * `every` iterations."""
    import torch

    if fp64:
        jax.config.update("jax_enable_x64", True)
    torch.manual_seed(seed)
    tdtype = torch.float64 if fp64 else torch.float32
    cfg = recipe_config(optimizer, data, imgsz, batch)
    batches, nb, num_images, nc = collect_batches(cfg, iterations, seed)
    plan = plan_optimizer(cfg, num_classes=nc, dataset_size=num_images, batches_per_epoch=nb)
    base = build_reference_model(scale, nc, seed=seed, randomize_bn=False).to(tdtype)
    task = YOLOv8Task(scale=scale, num_classes=nc, dtype=jnp.float64 if fp64 else jnp.float32)
    template = jax.eval_shape(lambda key: task.init(key, (imgsz, imgsz)), jax.random.key(0))
    variables = state_dict_to_variables(reference_state_dict(base), template)
    state, step, mesh = build_ours(task, plan, variables, adam_eps, fp64)
    reference = ReferenceRun(base, plan, adam_eps)
    twin = ReferenceRun(nudged(base, nudge, seed + 1), plan, adam_eps)
    start = reference.params()
    record = {"optimizer": optimizer, "iterations": iterations, "imgsz": imgsz, "batch": batch, "scale": scale,
              "adam_eps": adam_eps, "fp64": fp64, "nudge": nudge, "plan": {k: getattr(plan, k) for k in (
                  "name", "lr0", "momentum", "weight_decay", "warmup_iters", "nbs", "epochs", "lrf")},
              "loss": {"ours": [], "reference": [], "nudged": []}, "distance_iterations": [],
              "distance": {"ours": [], "nudged": []}}
    started = time.time()
    for i, host_batch in enumerate(batches):
        hyper = hyper_at(plan, i, i // nb)
        args = (state, shard_batch(host_batch, mesh), replicate(hyper, mesh))
        if i == 0 and fast_compile:
            step = step.lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
        state, metrics = step(*args)
        ref_batch = reference_batch(host_batch, tdtype)
        record["loss"]["reference"].append(reference.step(ref_batch, hyper, i))
        record["loss"]["nudged"].append(twin.step(ref_batch, hyper, i))
        record["loss"]["ours"].append(float(metrics["loss"]))
        if (i + 1) % every == 0 or i + 1 == iterations:
            ref_params = reference.params()
            ours = _named_params(state, ref_params)
            record["distance_iterations"].append(i + 1)
            record["distance"]["ours"].append(layer_distances(ours, ref_params, start))
            record["distance"]["nudged"].append(layer_distances(twin.params(), ref_params, start))
            losses = {k: v[-1] for k, v in record["loss"].items()}
            log(f"{optimizer} it {i + 1}/{iterations} loss ours/ref {losses['ours'] / losses['reference']:.4f}"
                f" nudged/ref {losses['nudged'] / losses['reference']:.4f}"
                f" ({time.time() - started:.0f} s)")
            if checkpoint is not None and (i + 1) % (5 * every) == 0:
                checkpoint(finish(record, started))
    return finish(record, started)


def finish(record: dict, started: float) -> dict:
    """The record with its loss ratios, run time and summary filled in (for the iterations run so far)."""
    ref_losses = np.asarray(record["loss"]["reference"])
    record["ratio"] = {k: (np.asarray(record["loss"][k]) / ref_losses).tolist() for k in ("ours", "nudged")}
    record["iterations_done"] = len(ref_losses)
    record["seconds"] = time.time() - started
    record["summary"] = summarize(record)
    return record


def _named_params(state, names_like: dict) -> dict:
    """Our parameters under the reference's state_dict names, float64 numpy (in their dtype's precision)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(state).variables()["params"])[0]:
        keys = tuple(p.key for p in path)
        out[torch_key("params", keys)] = to_torch_layout(keys[-1], np.asarray(leaf, np.float64))
    return {k: v for k, v in out.items() if k in names_like}


def summarize(record: dict) -> dict:
    """Loss-ratio range and the worst layer's final parameter distance, ours and the noise floor."""
    out = {}
    for side in ("ours", "nudged"):
        ratio = np.asarray(record["ratio"][side])
        last = record["distance"][side][-1]
        worst = max(last, key=last.get)
        tail = ratio[len(ratio) // 2:]
        out[side] = {"ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
                     "ratio_first": float(ratio[0]), "ratio_last": float(ratio[-1]),
                     "ratio_second_half_mean": float(tail.mean()),
                     "max_abs_log_ratio": float(np.max(np.abs(np.log(ratio)))),
                     "worst_layer": worst, "worst_layer_distance": last[worst],
                     "median_layer_distance": float(np.median(list(last.values())))}
    return out


def plot(record: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    its = np.arange(1, record["iterations_done"] + 1)
    for side, label in (("ours", "yolojax / reference"), ("nudged", "reference nudged 1e-6 / reference")):
        axes[0].plot(its, record["ratio"][side], label=label, linewidth=1)
    axes[0].axhline(1.0, color="gray", linewidth=0.5)
    axes[0].set(title="train loss ratio", xlabel="iteration")
    axes[0].legend(fontsize=8)
    layers = sorted(record["distance"]["ours"][-1], key=lambda k: int(k.split(".")[1]))
    for ax, side in zip(axes[1:], ("ours", "nudged")):
        for layer in layers:
            ax.semilogy(record["distance_iterations"], [d[layer] for d in record["distance"][side]],
                        linewidth=0.8, label=layer)
        ax.set(title=f"parameter distance per layer: {'yolojax' if side == 'ours' else 'nudged reference'} vs "
               "reference\n||a - ref|| / ||ref - start||", xlabel="iteration")
    axes[1].sharey(axes[2])
    axes[2].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{record['optimizer']}, v8{record['scale']}, imgsz {record['imgsz']}, batch {record['batch']}, "
                 f"Adam eps {record['adam_eps']:g}, {'float64' if record['fp64'] else 'float32'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", nargs="+", default=["SGD", "AdamW"], choices=sorted(RECIPES))
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--data", default="shapes", help="data yaml, or 'shapes' (the embedded dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nudge", type=float, default=1e-6)
    parser.add_argument("--adam-eps", type=float, default=1e-8)
    parser.add_argument("--fp64", action="store_true")
    parser.add_argument("--every", type=int, default=10, help="parameter distances every N iterations")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "trajectory"))
    args = parser.parse_args(argv)
    if not hasattr(np, "trapz"):  # ultralytics 8.2.103 calls np.trapz (numpy 2 renamed it)
        np.trapz = np.trapezoid
    data = str(ensure_shapes_dataset()) if args.data == "shapes" else args.data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.optimizer:
        stem = out / f"trajectory_{name}{args.tag}"

        def save(record: dict) -> None:
            stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
            plot(record, stem.with_suffix(".png"))

        record = run_trajectory(name, iterations=args.iters, imgsz=args.imgsz, batch=args.batch, scale=args.scale,
                                data=data, seed=args.seed, nudge=args.nudge, adam_eps=args.adam_eps,
                                fp64=args.fp64, every=args.every, checkpoint=save)
        save(record)
        print(json.dumps({name + args.tag: record["summary"], "seconds": round(record["seconds"])}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
