"""Time yolojax RoI Align / RoI Pool against torchvision on the same device, forward and forward+backward.

Full size (the issue's setting): 512 RoIs on a 256-channel 100 x 152 map (an 800 x 1216 image at stride 8).
`--small` is a CPU smoke run (64 RoIs, 32 channels, 25 x 38). Every case also checks the two outputs agree.

    python benchmarks/scripts/bench_roi.py            # GPU: jax[cuda] + torch with CUDA on the same machine
    python benchmarks/scripts/bench_roi.py --small    # CPU smoke test

Writes benchmarks/roi.json (key "full" or "small") and appends one markdown line per row to benchmarks/roi.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.bench.timing import median_ms
from yolojax.ops.roi import roi_align, roi_pool

OUT_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def make_inputs(seed, num_rois, channels, height, width, stride):
    """NHWC features and (k, 5) RoIs inside the image, 16 px .. half the image wide."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(1, height, width, channels)).astype(np.float32)
    img_h, img_w = height * stride, width * stride
    wh = rng.uniform(16, 0.5 * min(img_h, img_w), (num_rois, 2))
    xy = rng.uniform(0, 1, (num_rois, 2)) * ([img_w, img_h] - wh)
    rois = np.concatenate([np.zeros((num_rois, 1)), xy, xy + wh], 1).astype(np.float32)
    return features, rois


def jax_cases(op, kwargs, features, rois, cotangent):
    f, r, cot = jnp.asarray(features), jnp.asarray(rois), jnp.asarray(cotangent)
    forward = jax.jit(partial(op, **kwargs))
    backward = jax.jit(jax.grad(lambda x: jnp.sum(op(x, r, **kwargs) * cot)))
    return (lambda: forward(f, r)), (lambda: backward(f)), forward(f, r)


def torch_cases(name, args, features, rois, cotangent, device):
    import torch
    import torchvision
    op = getattr(torchvision.ops, name)
    x = torch.from_numpy(features).permute(0, 3, 1, 2).contiguous().to(device)
    r = torch.from_numpy(rois).to(device)
    cot = torch.from_numpy(cotangent).permute(0, 3, 1, 2).contiguous().to(device)
    xg = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            return op(x, r, *args)

    def backward():
        xg.grad = None
        op(xg, r, *args).backward(cot)
        return xg.grad

    return forward, backward, forward().permute(0, 2, 3, 1).cpu().numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny CPU smoke configuration")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    import torch
    if args.small:
        k, c, h, w, repeats = 64, 32, 25, 38, args.repeats or 3
    else:
        k, c, h, w, repeats = 512, 256, 100, 152, args.repeats or 50
    stride = 8
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync_torch = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
    sync_jax = lambda x: jax.block_until_ready(x)  # noqa: E731
    features, rois = make_inputs(0, k, c, h, w, stride)
    cases = [
        ("roi_align", "sampling_ratio=2", roi_align, dict(output_size=(7, 7), spatial_scale=1 / stride,
                                                          sampling_ratio=2), ((7, 7), 1 / stride, 2, False)),
        ("roi_align", "adaptive (sampling_ratio=-1)", roi_align,
         dict(output_size=(7, 7), spatial_scale=1 / stride, sampling_ratio=-1), ((7, 7), 1 / stride, -1, False)),
        ("roi_align", "sampling_ratio=2, precision=DEFAULT", roi_align,
         dict(output_size=(7, 7), spatial_scale=1 / stride, sampling_ratio=2, precision=None),
         ((7, 7), 1 / stride, 2, False)),
        ("roi_align", "sampling_ratio=2, gather", roi_align,
         dict(output_size=(7, 7), spatial_scale=1 / stride, sampling_ratio=2, method="gather"),
         ((7, 7), 1 / stride, 2, False)),
        ("roi_pool", "", roi_pool, dict(output_size=(7, 7), spatial_scale=1 / stride), ((7, 7), 1 / stride)),
    ]
    cotangent = np.random.default_rng(1).normal(size=(k, 7, 7, c)).astype(np.float32)
    rows = []
    for name, mode, op, kwargs, torch_args in cases:
        jf, jb, jout = jax_cases(op, kwargs, features, rois, cotangent)
        tf, tb, tout = torch_cases(name, torch_args, features, rois, cotangent, device)
        max_err = float(np.max(np.abs(np.asarray(jout) - tout)))
        for pass_name, jfn, tfn in (("forward", jf, tf), ("forward+backward", jb, tb)):
            jax_ms, torch_ms = median_ms(jfn, sync_jax, repeats, 2), median_ms(tfn, sync_torch, repeats, 2)
            rows.append(dict(op=name, mode=mode, pass_=pass_name, jax_ms=round(jax_ms, 4), torch_ms=round(torch_ms, 4),
                             speedup=round(torch_ms / jax_ms, 3), max_abs_diff=max_err))
            print(f"{name:9s} {mode:30s} {pass_name:17s} jax {jax_ms:9.3f} ms  torchvision {torch_ms:9.3f} ms  "
                  f"x{torch_ms / jax_ms:6.2f}  max|diff| {max_err:.2e}", flush=True)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                jax_device=str(jax.devices()[0]), jax_version=jax.__version__, torch_device=device,
                torch_version=torch.__version__, host=platform.node(), small=args.small, num_rois=k, channels=c,
                feature_hw=[h, w], repeats=repeats, output_size=[7, 7])
    OUT_DIR.mkdir(exist_ok=True)
    json_path = OUT_DIR / "roi.json"  # {"full": ..., "small": ...}: a smoke run never overwrites GPU numbers
    results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    results["small" if args.small else "full"] = {"meta": meta, "rows": rows}
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    with open(OUT_DIR / "roi.md", "a") as md:
        for row in rows:
            md.write(f"| {meta['date']} | {meta['jax_device']} | {row['op']} {row['mode']} | {row['pass_']} | "
                     f"{k} RoIs, {c}ch {h}x{w} | {row['jax_ms']} ms | {row['torch_ms']} ms ({device}) "
                     f"| x{row['speedup']} | {row['max_abs_diff']:.1e} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
