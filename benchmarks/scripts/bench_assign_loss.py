"""Benchmark: jitted Task-Aligned Assigner and YOLOv8 loss (forward, forward+backward) against ultralytics 8.2.103.

Both sides run in the same process on the same device (JAX's default backend; torch on CUDA when available) with
the same random inputs: b images of imgsz x imgsz, ~`gt_per_image` boxes each, nc classes. Each timing is the median
of `iters` calls after `warmup` calls, each call synchronised (`block_until_ready` / `torch.cuda.synchronize`).
The same run also checks parity on that device (assigner fg_mask mismatches, relative difference of loss items).

  python benchmarks/scripts/bench_assign_loss.py            # full size: b64, 640x640, ~8 boxes/image (GPU)
  python benchmarks/scripts/bench_assign_loss.py --small    # CPU smoke run: b2, 160x160

Writes benchmarks/assign_loss.json (or assign_loss.small.json with --small) and appends a row to
benchmarks/assign_loss.md.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pathlib
import sys
import types

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")

import numpy as np  # noqa: E402

if not hasattr(np, "trapz"):  # ultralytics 8.2.103 still names numpy 1's np.trapz
    np.trapz = np.trapezoid

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from yolojax.assign import task_aligned_assign  # noqa: E402
from yolojax.assign.tal import topk_mask, topk_mask_walk  # noqa: E402
from yolojax.bench.timing import median_ms  # noqa: E402
from yolojax.losses import detection_loss  # noqa: E402
from yolojax.ops.anchors import dist2bbox, make_anchors  # noqa: E402
from yolojax.ops.decode import dfl_expectation  # noqa: E402

STRIDES = (8, 16, 32)
REG_MAX = 16
ROOT = pathlib.Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny CPU smoke run (b2, 160x160, few iterations)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--gt-per-image", type=int, default=8, help="mean boxes per image (uniform in [n/2, 3n/2])")
    p.add_argument("--max-boxes", type=int, default=None, help="padding rows for JAX (default: batch max count)")
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args(argv)
    if args.small:
        args.batch, args.imgsz, args.iters, args.warmup = 2, 160, 5, 2
    if args.imgsz % max(STRIDES):
        p.error(f"--imgsz must be a multiple of {max(STRIDES)}, got {args.imgsz}")
    if args.out is None:
        args.out = ROOT / "benchmarks" / ("assign_loss.small.json" if args.small else "assign_loss.json")
    return args


def make_inputs(rng, batch, imgsz, gt_per_image, nc, max_boxes):
    """Random head outputs (b, h, w, 4*REG_MAX + nc) per level and padded targets (normalized xywh)."""
    feats = [rng.normal(0, 1, size=(batch, imgsz // s, imgsz // s, 4 * REG_MAX + nc)).astype(np.float32)
             for s in STRIDES]
    for f in feats:
        f[..., 4 * REG_MAX:] -= 4.0  # mostly-background class logits, as during training
    counts = rng.integers(max(gt_per_image // 2, 1), gt_per_image * 3 // 2 + 1, size=batch)
    m = max_boxes or int(counts.max())
    if m < counts.max():
        raise ValueError(f"--max-boxes {m} is below the largest box count {counts.max()}")
    wh = rng.uniform(8, imgsz / 2, size=(batch, m, 2)) / imgsz
    xy = wh / 2 + rng.uniform(0, 1, size=(batch, m, 2)) * (1 - wh)
    mask = np.arange(m)[None] < counts[:, None]
    targets = {"cls": rng.integers(0, nc, size=(batch, m)).astype(np.int32),
               "bboxes": (np.concatenate([xy, wh], -1) * mask[..., None]).astype(np.float32), "mask": mask}
    return feats, targets


def assigner_inputs(feats, targets, nc):
    """The assigner's inputs as the loss builds them: probabilities, pixel boxes, anchors, labels, xyxy, mask."""
    b = feats[0].shape[0]
    preds = np.concatenate([f.reshape(b, -1, f.shape[-1]) for f in feats], 1)
    points, strides = make_anchors([f.shape[1:3] for f in feats], STRIDES)
    boxes = dist2bbox(dfl_expectation(jnp.asarray(preds[..., : 4 * REG_MAX]), REG_MAX), points) * strides
    scale = feats[0].shape[1] * STRIDES[0]
    xywh = targets["bboxes"] * scale
    xyxy = np.concatenate([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
    return (1 / (1 + np.exp(-preds[..., 4 * REG_MAX:])), np.asarray(boxes), np.asarray(points * strides),
            targets["cls"][..., None], xyxy.astype(np.float32), targets["mask"][..., None])


def reference(nc, device):
    """ultralytics' v8DetectionLoss and TaskAlignedAssigner on a stand-in model (args, model[-1], parameters)."""
    try:
        import torch
        from ultralytics.utils.loss import v8DetectionLoss
        from ultralytics.utils.tal import TaskAlignedAssigner
    except ImportError as e:
        sys.exit(f"bench_assign_loss.py: the reference needs torch and ultralytics==8.2.103 ({e}); "
                 "install the [parity] extra")
    head = types.SimpleNamespace(nc=nc, no=nc + 4 * REG_MAX, reg_max=REG_MAX,
                                 stride=torch.tensor(STRIDES, dtype=torch.float32, device=device))
    model = types.SimpleNamespace(args=types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5), model=[head],
                                  parameters=lambda: iter([torch.zeros(1, device=device)]))
    return v8DetectionLoss(model, tal_topk=10), TaskAlignedAssigner(topk=10, num_classes=nc, alpha=0.5, beta=6.0)


def run(args):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
    rng = np.random.default_rng(args.seed)
    nc = args.num_classes
    feats, targets = make_inputs(rng, args.batch, args.imgsz, args.gt_per_image, nc, args.max_boxes)
    ref_loss, ref_assigner = reference(nc, device)

    # JAX side
    j_feats = jax.device_put([jnp.asarray(f) for f in feats])
    j_targets = jax.device_put({k: jnp.asarray(v) for k, v in targets.items()})
    j_assign_in = jax.device_put([jnp.asarray(x) for x in assigner_inputs(feats, targets, nc)])
    loss_fn = functools.partial(detection_loss, num_classes=nc)
    jax_assign = jax.jit(functools.partial(task_aligned_assign, num_classes=nc))
    jax_fwd = jax.jit(loss_fn)
    jax_fwd_bwd = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    # reference side: NCHW maps, flat targets (image index, class, normalized xywh)
    t_feats = [torch.from_numpy(f.transpose(0, 3, 1, 2).copy()).to(device) for f in feats]
    img, row = np.nonzero(targets["mask"])
    batch = {"batch_idx": torch.from_numpy(img.astype(np.float32)).to(device),
             "cls": torch.from_numpy(targets["cls"][img, row].astype(np.float32)[:, None]).to(device),
             "bboxes": torch.from_numpy(targets["bboxes"][img, row]).to(device)}
    t_assign_in = [torch.from_numpy(np.asarray(x, np.float32)).to(device) for x in assigner_inputs(feats, targets, nc)]

    def ref_fwd():
        with torch.no_grad():
            return ref_loss(t_feats, batch)

    def ref_fwd_bwd():
        leaves = [f.detach().requires_grad_(True) for f in t_feats]
        loss, items = ref_loss(leaves, batch)
        loss.backward()
        return leaves[0].grad

    # the top-k step alone, two ways (see yolojax.assign.tal): a sparse metric like the real one
    b, m = targets["mask"].shape
    dense = rng.uniform(size=(b, m, j_assign_in[1].shape[1]))
    j_metric = jax.device_put(jnp.asarray(np.where(rng.uniform(size=dense.shape) < 0.02, dense, 0), jnp.float32))
    j_mask_gt = jax.device_put(jnp.asarray(targets["mask"]))
    walk = jax.jit(functools.partial(topk_mask_walk, topk=10))
    sort = jax.jit(functools.partial(topk_mask, topk=10))

    jsync = jax.block_until_ready
    timings = {
        "jax_topk_walk": median_ms(lambda: walk(j_metric, j_mask_gt), jsync, args.iters, args.warmup),
        "jax_topk_sort": median_ms(lambda: sort(j_metric, j_mask_gt), jsync, args.iters, args.warmup),
        "jax_assign": median_ms(lambda: jax_assign(*j_assign_in), jsync, args.iters, args.warmup),
        "ref_assign": median_ms(lambda: ref_assigner(*t_assign_in), torch_sync, args.iters, args.warmup),
        "jax_loss_fwd": median_ms(lambda: jax_fwd(j_feats, j_targets), jsync, args.iters, args.warmup),
        "ref_loss_fwd": median_ms(ref_fwd, torch_sync, args.iters, args.warmup),
        "jax_loss_fwd_bwd": median_ms(lambda: jax_fwd_bwd(j_feats, j_targets), jsync, args.iters, args.warmup),
        "ref_loss_fwd_bwd": median_ms(ref_fwd_bwd, torch_sync, args.iters, args.warmup),
    }

    # parity on this device
    ours = jax_assign(*j_assign_in)
    ref = ref_assigner(*t_assign_in)
    _, items = jax_fwd(j_feats, j_targets)
    ref_items = ref_fwd()[1].cpu().numpy()
    parity = {
        "assign_fg_mismatch": int((np.asarray(ours[3]) != ref[3].cpu().numpy().astype(bool)).sum()),
        "assign_gt_idx_mismatch": int((np.asarray(ours[4]) != ref[4].cpu().numpy()).sum()),
        "assign_fg_count": int(np.asarray(ours[3]).sum()),
        "assign_scores_max_abs_diff": float(np.abs(np.asarray(ours[2]) - ref[2].cpu().numpy()).max()),
        "loss_items_max_rel_diff": float((np.abs(np.asarray(items) - ref_items) / np.abs(ref_items)).max()),
    }
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax_device": str(jax.devices()[0].device_kind), "jax_backend": jax.default_backend(),
        "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
        "config": {"batch": args.batch, "imgsz": args.imgsz, "anchors": sum((args.imgsz // s) ** 2 for s in STRIDES),
                   "gt_per_image": args.gt_per_image, "max_boxes": int(targets["mask"].shape[1]),
                   "num_classes": nc, "iters": args.iters, "warmup": args.warmup, "small": args.small},
        "timings_ms": timings,
        "speedup": {k: timings[f"ref_{k}"] / timings[f"jax_{k}"] for k in ("assign", "loss_fwd", "loss_fwd_bwd")},
        "parity": parity,
    }


def report(result, out: pathlib.Path):
    """Print a table, write the JSON, append a markdown row next to it."""
    t, s = result["timings_ms"], result["speedup"]
    print(f"device: jax {result['jax_device']} ({result['jax_backend']}), torch {result['torch_device']}")
    print(f"config: {result['config']}")
    print(f"{'what':<14}{'jax ms':>10}{'ref ms':>10}{'ref/jax':>9}")
    for k in ("assign", "loss_fwd", "loss_fwd_bwd"):
        print(f"{k:<14}{t['jax_' + k]:>10.3f}{t['ref_' + k]:>10.3f}{s[k]:>9.2f}")
    used = "walk" if jax.default_backend() == "gpu" else "lax.top_k"  # as yolojax.assign.tal.select_topk
    print(f"top-k step alone (jax): lax.top_k {t['jax_topk_sort']:.3f} ms, walk {t['jax_topk_walk']:.3f} ms "
          f"(the assigner uses {used} here)")
    print(f"parity: {result['parity']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = out.parent / "assign_loss.md"
    if not md.exists():
        md.write_text("| date | device | b | imgsz | max_boxes | assign jax/ref ms | loss fwd jax/ref ms "
                      "| fwd+bwd jax/ref ms | fg mismatch | items rel diff |\n" + "|---" * 10 + "|\n")
    c, p = result["config"], result["parity"]
    with md.open("a") as f:
        f.write(f"| {result['date']} | {result['jax_device']} / {result['torch_device']} | {c['batch']} "
                f"| {c['imgsz']} | {c['max_boxes']} | {t['jax_assign']:.3f} / {t['ref_assign']:.3f} "
                f"| {t['jax_loss_fwd']:.3f} / {t['ref_loss_fwd']:.3f} "
                f"| {t['jax_loss_fwd_bwd']:.3f} / {t['ref_loss_fwd_bwd']:.3f} "
                f"| {p['assign_fg_mismatch']} | {p['loss_items_max_rel_diff']:.1e} |\n")
    print(f"wrote {out} and {md}")


def main(argv=None):
    args = parse_args(argv)
    report(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
