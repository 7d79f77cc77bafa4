"""Inference latency: forward + NMS of our jitted YOLOv8 against the reference's eager PyTorch, same weights, same run.

  ours       one jitted function: YOLOv8 forward (compute dtype bf16, BatchNorm folded into the kernels and the
             variables packed in one buffer per dtype as predict runs it; `--variables folded`: one argument per
             array, `--variables plain`: the fp32 training variables) + non_max_suppression
             (conf 0.25, iou 0.7, max_det 300, predict settings); also the forward alone, to split the time.
  reference  ultralytics DetectionModel from its yaml, fused Conv+BN (as its predictor's AutoBackend does),
             .half().cuda().eval() on GPU (float32 on CPU, where half convolutions are not a fair baseline), eager;
             then ultralytics.utils.ops.non_max_suppression with the same settings.
Both get the same letterboxed random images already on the device, normalized to [0, 1] (the reference's
"preprocess" stage is not timed on either side). Times are medians over `--iters` calls after warm-up, with a device
sync after each call.

NMS load: a random model's class scores sit at the prior of its bias init (~1e-4), so at conf 0.25 nothing would
reach NMS. With `--load busy` (default) the BatchNorm statistics are randomized and every convolution is scaled by
2.2 (so that the signal survives the depth and scores differ between anchors), and one class bias for all classes
is chosen so that about `--candidates` anchors per image score above conf (a trained v8n on COCO images has tens
to a few hundred); the per-image candidate and detection counts of both sides are reported. `--load stock` keeps
the plain random init (no candidates at all).

    python benchmarks/scripts/bench_infer.py            # GPU, full size: YOLOv8n, 640 px, batch 1 and 32
    python benchmarks/scripts/bench_infer.py --small    # CPU proof run: 160 px, batch 1 and 2, a few iterations
Writes benchmarks/infer.json (infer.small.json with --small) and appends lines to benchmarks/infer.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from yolojax.bench.timing import share_process_with_reference  # noqa: E402

share_process_with_reference()
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402

apply_default_xla_flags(job="infer")

import numpy as np  # noqa: E402

from yolojax.bench.timing import median_ms, patch_constants  # noqa: E402

TARGETS = {"batch1_total_ms": 1.5, "batch32_ratio_to_reference": 0.5}


def build_models(args):
    """(reference torch module, our YOLOv8 module, our variables) with identical weights."""
    import jax
    import jax.numpy as jnp
    import torch

    from yolojax.convert.mapping import state_dict_to_variables
    from yolojax.convert.reference import build_reference_model, reference_state_dict
    from yolojax.models.yolov8 import YOLOv8

    reference = build_reference_model(args.scale, args.nc, seed=0, randomize_bn=args.load == "busy")
    if args.load == "busy":
        with torch.no_grad():
            for module in reference.modules():
                if isinstance(module, torch.nn.Conv2d) and module.weight.requires_grad:
                    module.weight.mul_(2.2)
        args.cls_bias = calibrate_class_bias(reference, args)
    model = YOLOv8(args.scale, args.nc, dtype=jnp.bfloat16 if args.dtype == "bf16" else jnp.float32)
    template = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3))), jax.random.key(0))
    variables = jax.device_put(state_dict_to_variables(reference_state_dict(reference), template))
    return reference, model, variables


def calibrate_class_bias(reference, args) -> float:
    """Set every class bias to the value that puts ~args.candidates anchors of a random image above args.conf."""
    import torch

    head, logits = reference.model[-1], []
    hooks = [branch[-1].register_forward_hook(lambda m, i, o: logits.append(o - m.bias[:, None, None]))
             for branch in head.cv3]
    image = np.random.default_rng(1).integers(0, 256, (1, 3, args.imgsz, args.imgsz)).astype(np.float32) / 255
    with torch.no_grad():
        reference(torch.from_numpy(image))
    for hook in hooks:
        hook.remove()
    best = torch.cat([t.amax(1).flatten() for t in logits]).double().numpy()
    quantile = float(np.quantile(best, max(0.0, 1.0 - args.candidates / best.size)))
    bias = float(np.log(args.conf / (1 - args.conf)) - quantile)
    with torch.no_grad():
        for branch in head.cv3:
            branch[-1].bias.fill_(bias)
    return bias


def time_ours(model, variables, images_nhwc, args):
    import jax
    import jax.numpy as jnp

    from yolojax.detectors.postprocess import non_max_suppression
    from yolojax.models.inference import apply_folded, fold_batchnorm

    x = jax.device_put(jnp.asarray(images_nhwc, dtype=model.dtype))
    if args.variables in ("folded", "packed"):  # as predict and val run them
        variables = fold_batchnorm(variables, kernel_dtype=model.dtype, ohwi=True, pack=args.variables == "packed")
        apply = lambda v, images: apply_folded(model, v, images, train=False)  # noqa: E731
    else:
        apply = lambda v, images: model.apply(v, images, train=False)  # noqa: E731

    @jax.jit
    def forward(v, images):
        return apply(v, images)

    @jax.jit
    def detect(v, images):
        boxes_xywh, class_probs = apply(v, images)
        out = non_max_suppression(boxes_xywh, class_probs, conf_thres=args.conf, iou_thres=args.iou,
                                  max_det=args.max_det, tile_size=args.tile)
        candidates = jnp.sum(jnp.max(class_probs, axis=-1) > args.conf, axis=-1)
        return out, candidates

    nms_alone = jax.jit(lambda boxes_xywh, class_probs: non_max_suppression(
        boxes_xywh, class_probs, conf_thres=args.conf, iou_thres=args.iou, max_det=args.max_det,
        tile_size=args.tile))
    raw = forward(variables, x)
    rounds = {"forward": [], "total": [], "nms_alone": []}
    for _ in range(args.rounds):  # interleaved, so that a slow spell of the host touches all three alike
        rounds["forward"].append(median_ms(lambda: forward(variables, x), jax.block_until_ready, args.iters,
                                           args.warmup))
        rounds["total"].append(median_ms(lambda: detect(variables, x), jax.block_until_ready, args.iters,
                                         args.warmup))
        rounds["nms_alone"].append(median_ms(lambda: nms_alone(*raw), jax.block_until_ready, args.iters,
                                             args.warmup))
    forward_ms, total_ms = float(np.median(rounds["forward"])), float(np.median(rounds["total"]))
    out, candidates = detect(variables, x)
    return dict(forward_ms=forward_ms, total_ms=total_ms, nms_ms=total_ms - forward_ms,
                nms_alone_ms=float(np.median(rounds["nms_alone"])), rounds_ms=rounds,
                candidates_per_image=float(np.mean(np.asarray(candidates))),
                detections_per_image=float(np.asarray(out["valid"]).sum(1).mean()),
                device=str(jax.devices()[0].device_kind), dtype=args.dtype)


def time_reference(reference, images_nhwc, args):
    import torch
    import torchvision  # noqa: F401  (8.4's NMS uses torchvision's kernel only when it is imported already)
    import ultralytics

    try:
        from ultralytics.utils.nms import non_max_suppression  # 8.4 moved it
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = reference.to(device).eval()
    model = model.half() if cuda else model.float()
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))).to(device)
    x = x.half() if cuda else x.float()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    forward_times, nms_times, last = [], [], {}
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            start = time.perf_counter()
            preds = model(x)
            sync()
            mid = time.perf_counter()
            dets = non_max_suppression(preds, args.conf, args.iou, max_det=args.max_det)
            sync()
            end = time.perf_counter()
            if i >= args.warmup:
                forward_times.append(mid - start)
                nms_times.append(end - mid)
        last = dict(dets=dets, preds=preds[0] if isinstance(preds, (list, tuple)) else preds)
    forward_ms, nms_ms = float(np.median(forward_times) * 1e3), float(np.median(nms_times) * 1e3)
    scores = last["preds"][:, 4:].amax(1)
    return dict(forward_ms=forward_ms, nms_ms=nms_ms, total_ms=forward_ms + nms_ms,
                candidates_per_image=float((scores > args.conf).sum(1).float().mean()),
                detections_per_image=float(np.mean([len(d) for d in last["dets"]])),
                device=torch.cuda.get_device_name() if cuda else "cpu", dtype="fp16" if cuda else "fp32",
                version=ultralytics.__version__)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU proof run: 160 px, batch 1 and 2")
    parser.add_argument("--scale", default="n")
    parser.add_argument("--nc", type=int, default=80)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--load", choices=["busy", "stock"], default="busy")
    parser.add_argument("--candidates", type=int, default=300, help="busy load: anchors per image above conf")
    parser.add_argument("--tile", type=int, default=512, help="our NMS tile size (speed knob)")
    parser.add_argument("--variables", choices=["packed", "folded", "plain"], default="packed",
                        help="ours: BatchNorm folded and packed in one buffer per dtype as predict runs it, folded "
                        "(one argument per array), or the training variables as they are")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="ours: medians of --iters calls, this many times "
                        "interleaved; the median of them is reported")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the installed ultralytics (--no-reference: ours alone)")
    parser.add_argument("--patch", action="append", default=[],
                        help="module.NAME=value set before building (A/B of a module constant), repeatable")
    parser.add_argument("--out", default=str(ROOT / "benchmarks"))
    args = parser.parse_args(argv)
    patch_constants(args.patch)
    if args.small:
        args.imgsz, args.batches, args.iters, args.warmup, args.rounds = 160, [1, 2], 5, 2, 2

    reference, model, variables = build_models(args)
    reference.fuse()  # Conv+BN folded, as the reference's predictor runs it (our variables are already taken)
    rng = np.random.default_rng(0)
    runs = []
    for batch in args.batches:
        images = rng.integers(0, 256, (batch, args.imgsz, args.imgsz, 3)).astype(np.float32) / 255.0
        ours = time_ours(model, variables, images, args)
        line = (f"batch {batch}: ours {ours['total_ms']:.3f} ms (forward {ours['forward_ms']:.3f}, NMS alone "
                f"{ours['nms_alone_ms']:.3f}; rounds {[round(t, 3) for t in ours['rounds_ms']['total']]})")
        if not args.reference:
            runs.append(dict(batch=batch, ours=ours))
            print(f"{line} | detections/img {ours['detections_per_image']:.1f}")
            continue
        ref = time_reference(reference, images, args)
        runs.append(dict(batch=batch, ours=ours, reference=ref, speedup=ref["total_ms"] / ours["total_ms"]))
        print(f"{line} | reference {ref['total_ms']:.3f} ms (forward {ref['forward_ms']:.3f} + nms "
              f"{ref['nms_ms']:.3f}) | x{runs[-1]['speedup']:.2f} | detections/img ours "
              f"{ours['detections_per_image']:.1f} ref {ref['detections_per_image']:.1f}")
    result = dict(scale=args.scale, nc=args.nc, imgsz=args.imgsz, conf=args.conf, iou=args.iou, patch=args.patch,
                  max_det=args.max_det, tile=args.tile, load=args.load, cls_bias=getattr(args, "cls_bias", None),
                  small=args.small, iters=args.iters, xla_flags=os.environ.get("XLA_FLAGS", ""), runs=runs,
                  targets=TARGETS, targets_met=targets_met(runs))
    write(result, Path(args.out))
    return 0


def targets_met(runs):
    met = {}
    for run in runs:
        if run["batch"] == 1:
            met["batch1_total_ms"] = run["ours"]["total_ms"] <= TARGETS["batch1_total_ms"]
        if run["batch"] == 32 and "reference" in run:
            met["batch32_ratio_to_reference"] = (run["ours"]["total_ms"] / run["reference"]["total_ms"]
                                                 <= TARGETS["batch32_ratio_to_reference"])
    return met


def write(result, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "infer.small.json" if result["small"] else "infer.json"
    (out_dir / name).write_text(json.dumps(result, indent=2))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(out_dir / "infer.md", "a") as f:
        for run in result["runs"]:
            ours, ref = run["ours"], run.get("reference")
            peer = ("| reference not timed | - |" if ref is None else
                    f"| reference {ref['dtype']} on {ref['device']} {ref['total_ms']:.3f} ms (forward "
                    f"{ref['forward_ms']:.3f} + nms {ref['nms_ms']:.3f}) | x{run['speedup']:.2f} |")
            f.write(f"| {stamp} | {ours['device']} | yolov8{result['scale']} {result['imgsz']}px batch "
                    f"{run['batch']} ({result['load']} load{', small' if result['small'] else ''}) | ours "
                    f"{ours['dtype']} {ours['total_ms']:.3f} ms (forward {ours['forward_ms']:.3f}) {peer} "
                    f"detections/img {ours['detections_per_image']:.1f} vs "
                    f"{'-' if ref is None else format(ref['detections_per_image'], '.1f')} |\n")
    print(f"wrote {out_dir / name} and {out_dir / 'infer.md'}")


if __name__ == "__main__":
    sys.exit(main())
