"""Benchmark: ONNX Runtime latency of our ONNX export against the reference's own ONNX export, same weights.

The reference (ultralytics 8.2.103 `YOLO("yolov8n.yaml").export(format="onnx")`) carries random weights with
non-trivial BatchNorm statistics (`yolojax.convert.reference.build_reference_model`); the same tensors, converted
(`yolojax.convert.mapping`), are exported by `yolojax.export.export_model`. Both graphs stop at the decoded boxes and
class probabilities (ours also with NMS in the graph, an extra row). Inputs: ours uint8 RGB NHWC (it divides by
255 itself), the reference's float32 NCHW in [0, 1]. Each timing is the median of `iters` `session.run` calls
(host arrays in and out) after `warmup` calls, all in one process on one execution provider. The run also checks
that both graphs give the same numbers (max difference of boxes and probabilities on the same images).

  python benchmarks/scripts/bench_export.py --out export.json                    # GPU: 640 px, batch 1 and 32
  python benchmarks/scripts/bench_export.py --imgsz 64 --iters 3 --device cpu --out /tmp/export.json   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the export itself needs no GPU; the GPU is ONNX Runtime's

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if not hasattr(np, "trapz"):  # ultralytics 8.2.103 still names numpy 1's np.trapz
    np.trapz = np.trapezoid

from yolojax.bench.timing import median_ms  # noqa: E402
from yolojax.convert.mapping import state_dict_to_variables  # noqa: E402
from yolojax.convert.reference import build_reference_model, reference_state_dict  # noqa: E402
from yolojax.export import export_model  # noqa: E402
from yolojax.models.weights import save_weights  # noqa: E402
from yolojax.models.yolov8 import YOLOv8  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="n")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes (one fixed-batch graph each)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--opset", type=int, default=17, help="the same opset for both exports")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--out", required=True, help="JSON results file")
    return p.parse_args(argv)


def providers(device: str) -> list[str]:
    import onnxruntime

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "cuda" and not cuda:
        raise SystemExit("bench_export: --device cuda, but ONNX Runtime has no CUDAExecutionProvider here")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda and device != "cpu" else ["CPUExecutionProvider"]


def session(path, provider_list):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=provider_list)


def our_weights(reference, scale: str, imgsz: int, folder: pathlib.Path) -> pathlib.Path:
    """The reference's tensors as a yolojax weights folder."""
    model = YOLOv8(scale, 80)
    template = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0))
    variables = state_dict_to_variables(reference_state_dict(reference), template)
    return save_weights(folder, variables, {"scale": scale, "num_classes": 80, "imgsz": imgsz,
                                            "names": [str(i) for i in range(80)]})


def reference_export(reference, scale: str, imgsz: int, batch: int, opset: int, folder: pathlib.Path) -> pathlib.Path:
    """ultralytics' own ONNX export of a YOLO object carrying the reference model's weights."""
    import torch
    from ultralytics import YOLO

    # ultralytics 8.2.103 was written for the TorchScript exporter, torch's default before 2.9 (now dynamo)
    torch_export = torch.onnx.export
    torch.onnx.export = lambda *a, **k: torch_export(*a, **{"dynamo": False, **k})
    yolo = YOLO(f"yolov8{scale}.yaml")
    yolo.model.load_state_dict(reference.state_dict())
    cwd = os.getcwd()
    os.chdir(folder)  # a yaml-built model exports next to its (relative) yaml name
    try:
        written = pathlib.Path(yolo.export(format="onnx", imgsz=imgsz, batch=batch, opset=opset, device="cpu",
                                           simplify=False, verbose=False)).resolve()
    finally:
        os.chdir(cwd)
        torch.onnx.export = torch_export
    return pathlib.Path(shutil.move(str(written), folder / f"reference_b{batch}.onnx"))


def time_session(sess, feed, iters: int, warmup: int) -> float:
    return median_ms(lambda: sess.run(None, feed), lambda out: out, iters, warmup)


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime

    provider_list = providers(args.device)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_export_"))
    reference = build_reference_model(args.scale, 80, seed=0)
    weights = our_weights(reference, args.scale, args.imgsz, work / "weights")
    rng = np.random.default_rng(0)
    rows, parity = [], {}
    for batch in [int(b) for b in args.batches.split(",")]:
        images = rng.integers(0, 256, (batch, args.imgsz, args.imgsz, 3), dtype=np.uint8)
        nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32) / 255.0
        ours = session(export_model(weights, imgsz=args.imgsz, batch=batch, opset=args.opset,
                                    out=work / f"ours_b{batch}.onnx"), provider_list)
        ours_nms = session(export_model(weights, imgsz=args.imgsz, batch=batch, opset=args.opset, nms=True,
                                        out=work / f"ours_nms_b{batch}.onnx"), provider_list)
        ref = session(reference_export(reference, args.scale, args.imgsz, batch, args.opset, work), provider_list)
        feeds = {"ours": (ours, {"images": images}),
                 "ours+nms": (ours_nms, {"images": images, "conf": np.array(0.25, np.float32),
                                         "iou": np.array(0.7, np.float32)}),
                 "reference": (ref, {ref.get_inputs()[0].name: nchw})}
        boxes, probs = ours.run(None, feeds["ours"][1])
        expected = ref.run(None, feeds["reference"][1])[0].transpose(0, 2, 1)  # (b, a, 4 + nc)
        parity[f"batch{batch}"] = {"boxes_max_abs_diff": float(np.abs(boxes - expected[..., :4]).max()),
                                   "probs_max_abs_diff": float(np.abs(probs - expected[..., 4:]).max())}
        for name, (sess, feed) in feeds.items():
            ms = time_session(sess, feed, args.iters, args.warmup)
            rows.append({"impl": name, "batch": batch, "ms": ms, "img_per_s": batch / ms * 1e3})
            print(f"{name:>10} b{batch:<3} {ms:8.3f} ms  {batch / ms * 1e3:9.1f} img/s", flush=True)
    for batch in {r["batch"] for r in rows}:
        by = {r["impl"]: r["ms"] for r in rows if r["batch"] == batch}
        print(f"b{batch}: reference / ours = {by['reference'] / by['ours']:.2f}x")
    result = {"scale": args.scale, "imgsz": args.imgsz, "opset": args.opset, "iters": args.iters,
              "warmup": args.warmup, "providers": provider_list, "onnxruntime": onnxruntime.__version__,
              "device": onnxruntime.get_device(), "rows": rows, "parity": parity,
              "inputs": {"ours": "uint8 NHWC RGB", "reference": "float32 NCHW [0, 1]"}}
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
