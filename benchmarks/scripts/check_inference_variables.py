"""On the GPU: does the forward with folded inference variables (`yolojax.models.inference`) give the plain eval
forward's outputs, per batch size, with and without the OHWI kernel layout, packed (as predict and val take them),
and packed on plain convolutions (the export's forward; at batch 32 the others run the narrow layers over pixel
blocks)?

    python benchmarks/scripts/check_inference_variables.py [--batches 1 2 32] [--imgsz 640]

Random v8n weights with random BatchNorm statistics, bf16, the inference XLA flags (`YOLOJAX_XLA_FLAGS=0` for XLA's
own). Prints and writes (`--out`) the largest differences of the decoded boxes (pixels) and class probabilities, and
the detections kept by NMS in image 0 over `--repeats` calls (conf set so that about 300 anchors per image pass it,
as bench_infer's busy load), for the plain variables too, and the NMS alone on the plain outputs against the CPU
backend's NMS of the same arrays (kept counts of every image).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402

apply_default_xla_flags(job="infer")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from yolojax.bench.weights import batchnorm_off_identity  # noqa: E402
from yolojax.detectors.postprocess import non_max_suppression  # noqa: E402
from yolojax.models.inference import apply_folded, fold_batchnorm  # noqa: E402
from yolojax.models.yolov8 import YOLOv8, init_variables  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 32])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=20, help="NMS calls per variant (the kept counts seen)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    model = YOLOv8("n", 80, dtype=jnp.bfloat16)
    variables = jax.device_put(batchnorm_off_identity(init_variables(model, jax.random.PRNGKey(0)),
                                                      np.random.default_rng(0)))
    pixels = model.clone(inference_blocks=False)  # the export's forward: large batches too on plain convolutions
    plain = jax.jit(lambda v, x: model.apply(v, x, train=False))
    folded = jax.jit(lambda v, x: apply_folded(model, v, x, train=False))
    folded_pixels = jax.jit(lambda v, x: apply_folded(pixels, v, x, train=False))
    def detect(apply):
        def run(v, x, conf):
            boxes, probs = apply(v, x)
            return non_max_suppression(boxes, probs, conf_thres=conf, iou_thres=0.7, max_det=300)["valid"].sum(1)
        return jax.jit(run, static_argnums=2)

    plain_detect = detect(lambda v, x: model.apply(v, x, train=False))
    folded_detect = detect(lambda v, x: apply_folded(model, v, x, train=False))
    def nms_kept(boxes, probs, conf, device):
        run = jax.jit(lambda b, p: non_max_suppression(b, p, conf_thres=conf, iou_thres=0.7, max_det=300)["valid"]
                      .sum(1))
        return np.asarray(run(jax.device_put(boxes, device), jax.device_put(probs, device))).tolist()

    rows = []
    for batch in args.batches:
        x = jnp.asarray(np.random.default_rng(batch).random((batch, args.imgsz, args.imgsz, 3)), jnp.bfloat16)
        ref_boxes, ref_probs = (np.asarray(a, np.float32) for a in plain(variables, x))
        # just below the 300th best score of every image, so that ties at it pass too (saturated scores tie)
        conf = float(np.nextafter(np.sort(ref_probs.max(-1), axis=-1)[:, -300].min(), np.float32(0)))
        kept = [np.asarray(plain_detect(variables, x, conf)).tolist() for _ in range(args.repeats)]
        # the NMS alone on the same forward outputs: on this device against the CPU backend, every image
        on_device = nms_kept(ref_boxes, ref_probs, conf, jax.devices()[0])
        on_cpu = nms_kept(ref_boxes, ref_probs, conf, jax.devices("cpu")[0])
        rows.append({"batch": batch, "variables": "plain", "kept_image0": sorted({k[0] for k in kept}),
                     "nms_alone_kept": on_device[:8], "nms_alone_kept_cpu": on_cpu[:8],
                     "nms_alone_matches_cpu": on_device == on_cpu})
        print(json.dumps(rows[-1]), flush=True)
        variants = {"folded": (False, False, folded), "folded_ohwi": (True, False, folded),
                    "packed (predict, val)": (True, True, folded), "packed, on pixels": (True, True, folded_pixels)}
        for name, (ohwi, pack, forward) in variants.items():
            prepared = fold_batchnorm(variables, kernel_dtype=jnp.bfloat16, ohwi=ohwi, pack=pack)
            boxes, probs = (np.asarray(a, np.float32) for a in forward(prepared, x))
            row = {"batch": batch, "variables": name,
                   "boxes_max_abs_px": float(np.abs(boxes - ref_boxes).max()),
                   "boxes_median_abs_px": float(np.median(np.abs(boxes - ref_boxes))),
                   "probs_max_abs": float(np.abs(probs - ref_probs).max()),
                   "nonfinite": int((~np.isfinite(boxes)).sum() + (~np.isfinite(probs)).sum())}
            if forward is folded:  # the NMS's kept counts over repeated calls (the export's forward: outputs only)
                kept = [np.asarray(folded_detect(prepared, x, conf)).tolist() for _ in range(args.repeats)]
                row["kept_image0"] = sorted({k[0] for k in kept})
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": jax.devices()[0].device_kind, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
