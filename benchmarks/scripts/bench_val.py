"""Validation throughput (images/s): our `evaluate` against the reference's val loop, same weights, same images.

Both sides get the same in-memory letterboxed batches (procedural shapes images, ratio 1, pad 0) and the same YOLOv8
weights (the reference model from its yaml with random weights and BatchNorm statistics, its class logits scaled
so that NMS has a trained model's workload; converted to ours), conf 0.001, iou 0.7, max_det 300, multi-label NMS
(every box-class pair above conf, as the reference's validator asks). Timed per side after a warm-up pass:
  ours       evaluate(): forward + NMS + both matchings + confusion counts (one jitted step) + host AP
  reference  DetectionValidator's loop body: forward, non_max_suppression (without its time limit; batches that
             would have hit it are counted), update_metrics, then get_stats
The data loader is not timed on either side (benchmarks/scripts/bench_data.py measures it). The labels are the reference
model's own top detections, jittered, so that mAP is not 0: the two mAPs are an end-to-end agreement check,
split into the share of identical detections and our metric on the reference's own detections.

    python benchmarks/scripts/bench_val.py              # GPU, full size: imgsz 640, batch 32, 512 images, YOLOv8n
    python benchmarks/scripts/bench_val.py --small      # CPU proof run: imgsz 160, batch 4, 16 images
Writes benchmarks/val.json (val.small.json with --small) and appends a line to benchmarks/val.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from yolojax.bench.timing import share_process_with_reference  # noqa: E402

share_process_with_reference()
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402

apply_default_xla_flags(job="infer")

import numpy as np  # noqa: E402

if not hasattr(np, "trapz"):  # ultralytics 8.2.103 calls np.trapz (numpy 2.4 removed it)
    np.trapz = np.trapezoid


def shapes_canvas(rng, imgsz):
    """A procedural shapes image (yolojax.data.shapes) on the letterbox's grey (114) square canvas."""
    from yolojax.data.shapes import make_shapes_image

    image, _, _ = make_shapes_image(rng, imgsz=imgsz)
    canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image
    return canvas


def make_batches(rng, num_images, batch, imgsz, num_classes, boxes_per_image=8):
    """Letterboxed val batches in yolojax.data's layout (original shape = input shape, ratio 1, pad 0)."""
    batches = []
    for start in range(0, num_images, batch):
        n = min(batch, num_images - start)
        valid = np.arange(batch) < n
        centres = rng.uniform(0.15, 0.85, (batch, boxes_per_image, 2))
        sizes = rng.uniform(0.03, 0.3, (batch, boxes_per_image, 2))
        bboxes = np.concatenate([centres, sizes], -1).astype(np.float32)
        cls = rng.integers(0, num_classes, (batch, boxes_per_image)).astype(np.int32)
        mask = np.repeat(valid[:, None], boxes_per_image, 1)
        images = np.stack([shapes_canvas(rng, imgsz) for _ in range(batch)])
        batches.append(dict(images=images, bboxes=bboxes, cls=cls, mask=mask, valid=valid,
                            image_id=np.arange(start, start + batch), ori_shape=np.full((batch, 2), imgsz),
                            ratio=np.ones((batch, 2), np.float32), pad=np.zeros((batch, 2), np.float32)))
    return batches


def our_side(state, batches, args):
    import jax
    import jax.numpy as jnp

    from yolojax.convert.mapping import state_dict_to_variables
    from yolojax.detectors import YOLOv8Task
    from yolojax.eval.val import evaluate

    task = YOLOv8Task(scale=args.scale, num_classes=args.num_classes,
                      dtype=jnp.bfloat16 if args.half else jnp.float32)
    template = jax.eval_shape(lambda: task.init(jax.random.key(0), (args.imgsz, args.imgsz)))
    variables = jax.device_put(state_dict_to_variables(state, template))
    kwargs = dict(conf=args.conf, iou=args.iou, max_det=args.max_det, mode="ultralytics")
    start = time.perf_counter()
    evaluate(task, variables, batches[:1], **kwargs)  # compile
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(task, variables, batches, **kwargs)
    seconds = time.perf_counter() - start
    timing = dict(seconds=seconds, compile_s=compile_s, map50_95=result["ultralytics"]["map50_95"],
                  map50=result["ultralytics"]["map50"], detections_per_image=result["detections"] / args.images,
                  device=str(jax.devices()[0].device_kind))
    return timing, task, variables


def agreement_checks(task, variables, batches, ref_dets, ref_map50_95, args):
    """Split the end-to-end comparison: (a) the share of our detections that the reference's NMS also returned
    (same class, score within 1e-4, box within 0.05 px; a random-weight network emits many near-duplicate boxes
    whose scores tie to ~1e-7, so float32 rounding differences between the two forwards flip which one NMS keeps),
    (b) our evaluation of the reference's own detections against its mAP (the metric alone, expected equal)."""
    import jax
    import jax.numpy as jnp

    predict = jax.jit(lambda v, x: task.predict(v, x, conf=args.conf, iou=args.iou, max_det=args.max_det))
    agreed = total = 0
    image = 0
    for b in batches:
        out = jax.device_get(predict(variables, jnp.asarray(b["images"])))
        for i in range(int(b["valid"].sum())):
            ours = out["valid"][i]
            mine = np.concatenate([out["boxes"][i][ours], out["scores"][i][ours, None],
                                   out["classes"][i][ours, None]], 1)
            ref = ref_dets[image]
            image += 1
            if len(ref) and len(mine):
                close = ((np.abs(mine[:, None, :4] - ref[None, :, :4]).max(-1) < 0.05)
                         & (np.abs(mine[:, None, 4] - ref[None, :, 4]) < 1e-4) & (mine[:, None, 5] == ref[None, :, 5]))
                agreed += int(close.any(1).sum())
            total += len(mine)
    metric_only = replay_reference_detections(batches, ref_dets, args)
    return dict(detection_agreement=agreed / max(total, 1),
                metric_only_abs_diff=abs(metric_only["ultralytics"]["map50_95"] - ref_map50_95))


def replay_reference_detections(batches, ref_dets, args):
    """Our evaluate() on the reference's own per-image detections (N, 6) xyxy, conf, class."""
    import dataclasses

    import jax.numpy as jnp

    from yolojax.eval.val import evaluate

    @dataclasses.dataclass(frozen=True)
    class TableTask:  # replays the reference's detections: image pixels [0, 0, :2] hold the image's row
        num_classes: int

        def predict(self, variables, images, *, conf=0.001, iou=0.7, max_det=300, multi_label=True):
            row = images[:, 0, 0, 0].astype(jnp.int32) + 256 * images[:, 0, 0, 1].astype(jnp.int32)
            return {k: variables[k][row] for k in ("boxes", "scores", "classes", "valid")}

    n, d = len(ref_dets), args.max_det
    table = dict(boxes=np.zeros((n, d, 4), np.float32), scores=np.zeros((n, d), np.float32),
                 classes=np.zeros((n, d), np.int32), valid=np.zeros((n, d), bool))
    for i, det in enumerate(ref_dets):
        k = len(det)
        table["boxes"][i, :k], table["scores"][i, :k] = det[:, :4], det[:, 4]
        table["classes"][i, :k], table["valid"][i, :k] = det[:, 5], True
    replay, start = [], 0
    for b in batches:
        rows = np.arange(start, start + len(b["valid"])) % max(n, 1)
        start += int(b["valid"].sum())
        images = np.zeros((len(rows), 1, 1, 3), np.uint8)  # a 1-pixel stand-in: the ground truth goes in pixels
        images[:, 0, 0, 0], images[:, 0, 0, 1] = rows % 256, rows // 256
        xywh = b["bboxes"] * args.imgsz
        xyxy = np.concatenate([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
        replay.append({**b, "images": images, "gt_cls": [c[m] for c, m in zip(b["cls"], b["mask"])],
                       "gt_bboxes": [np.clip(x[m], 0, args.imgsz) for x, m in zip(xyxy, b["mask"])]})
    return evaluate(TableTask(args.num_classes), table, replay, max_det=d, mode="ultralytics")


def reference_side(model, batches, args, tmp_dir, captured=None):
    from types import SimpleNamespace

    import torch
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils import ops

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    model = model.half() if args.half else model.float()
    # The reference's NMS gives up after 2 s + 0.05 s per image and returns what it has; for a complete,
    # comparable result it runs without that limit here, and the batches that would have hit it are counted.
    nms_over_limit = []
    original_nms = ops.non_max_suppression

    def nms_without_limit(prediction, *a, **kw):
        start = time.perf_counter()
        out = original_nms(prediction, *a, **{**kw, "max_time_img": 1e9})
        batch = len(prediction[0] if isinstance(prediction, (list, tuple)) else prediction)
        nms_over_limit.append(time.perf_counter() - start > 2.0 + 0.05 * batch)
        return out

    def run(selection):
        v = DetectionValidator(save_dir=Path(tmp_dir), args=dict(conf=args.conf, iou=args.iou, max_det=args.max_det,
                                                                  plots=False, save_json=False, half=args.half))
        v.device = device
        v.data = {"val": ""}
        v.init_metrics(SimpleNamespace(names={i: str(i) for i in range(args.num_classes)}))
        for b in selection:
            n = int(b["valid"].sum())
            img = torch.from_numpy(b["images"][:n]).to(device).permute(0, 3, 1, 2)
            img = (img.half() if args.half else img.float()) / 255
            rows = [(i, c, box) for i in range(n) for c, box, m in zip(b["cls"][i], b["bboxes"][i], b["mask"][i]) if m]
            batch = dict(img=img, batch_idx=torch.tensor([r[0] for r in rows], dtype=torch.float32, device=device),
                         cls=torch.tensor([[r[1]] for r in rows], dtype=torch.float32, device=device),
                         bboxes=torch.tensor(np.array([r[2] for r in rows]), device=device),
                         ori_shape=[tuple(s) for s in b["ori_shape"][:n]],
                         ratio_pad=[((1.0, 1.0), (0.0, 0.0))] * n, im_file=[f"{i}.jpg" for i in b["image_id"][:n]])
            with torch.no_grad():
                preds = v.postprocess(model(img))
            if captured is not None:
                captured.extend(p[:, :6].float().cpu().numpy() for p in preds)
            v.update_metrics(preds, batch)
        stats = v.get_stats()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return stats, sum(len(c) for c in v.stats["conf"])

    ops.non_max_suppression = nms_without_limit
    try:
        run(batches[:1])  # warm-up
        nms_over_limit.clear()
        if captured is not None:
            captured.clear()
        start = time.perf_counter()
        stats, detections = run(batches)
        seconds = time.perf_counter() - start
    finally:
        ops.non_max_suppression = original_nms
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return dict(seconds=seconds, map50_95=float(stats["metrics/mAP50-95(B)"]),
                map50=float(stats["metrics/mAP50(B)"]), detections_per_image=detections / args.images,
                nms_time_limit_hits=int(sum(nms_over_limit)), device=name)


def pseudo_label(model, batches, *, boxes_per_image=8, seed=1):
    """Replace the random labels by the reference model's own top detections that lie inside the image, jittered
    (about 5% of the box size) and with one in ten dropped, so that mAP is far from 0 and both sides' numbers can
    be compared end to end. (Boxes sticking out would be clipped to identical image-sized labels: exact IoU ties
    that the reference breaks by numpy's unstable sort order.)"""
    import torch
    from ultralytics.utils.ops import non_max_suppression, xyxy2xywh

    rng = np.random.default_rng(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.float().to(device)
    for b in batches:
        with torch.no_grad():
            images = torch.from_numpy(b["images"]).to(device).permute(0, 3, 1, 2).float() / 255
            preds = model(images)[0].cpu()
        size = b["images"].shape[1]
        b["mask"][:] = False
        for i, det in enumerate(non_max_suppression(preds, 0.001, 0.7, max_det=300, max_time_img=1e9)):
            det = det.numpy()
            det = det[(det[:, :2] >= 0).all(1) & (det[:, 2:4] <= size).all(1)][:boxes_per_image]
            n = len(det)
            wh = np.tile(det[:, 2:4] - det[:, :2], 2)
            boxes = np.clip(det[:, :4] + rng.normal(0, 0.05, (n, 4)) * wh, 0, size)
            b["bboxes"][i, :n] = xyxy2xywh(boxes) / size
            b["cls"][i, :n] = det[:, 5].astype(np.int32)
            b["mask"][i, :n] = (rng.random(n) > 0.1) & bool(b["valid"][i])
    return batches


def set_class_logits(model, gain, bias):
    """Random weights give almost no class probability above conf 0.001 (the head's prior is ~1e-5) and many
    exactly tied scores; a trained model gives thousands of distinct candidates per image. Scaling the last class
    conv by `gain` and setting its bias restores that NMS workload (about 14k candidates per 160 px image with the
    defaults) and makes exact ties rare, so that both sides' NMS keep the same boxes."""
    import torch

    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].weight.mul_(gain)
            branch[-1].bias.fill_(bias)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny CPU run: imgsz 160, batch 4, 16 images")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--conf", type=float, default=0.001)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--cls-gain", type=float, default=10.0, help="class-logit weight scale (see set_class_logits)")
    parser.add_argument("--cls-bias", type=float, default=-8.0, help="class-logit bias (sets the NMS workload)")
    parser.add_argument("--half", action="store_true", help="fp16 reference / bf16 ours (default fp32 both)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks"))
    args = parser.parse_args(argv)
    if args.small:
        args.imgsz, args.batch, args.images = 160, 4, 16

    from yolojax.convert.reference import build_reference_model, reference_state_dict

    model = build_reference_model(args.scale, args.num_classes, seed=0)
    set_class_logits(model, args.cls_gain, args.cls_bias)
    state = reference_state_dict(model)
    batches = make_batches(np.random.default_rng(0), args.images, args.batch, args.imgsz, args.num_classes)
    batches = pseudo_label(model, batches)
    ours, task, variables = our_side(state, batches, args)
    result = dict(benchmark="val", scale=args.scale, imgsz=args.imgsz, batch=args.batch, images=args.images,
                  conf=args.conf, iou=args.iou, max_det=args.max_det, half=args.half, small=args.small,
                  ours=dict(ours, images_per_s=args.images / ours["seconds"]))
    if not args.no_reference:
        ref_dets = []
        with tempfile.TemporaryDirectory() as tmp_dir:
            ref = reference_side(model, batches, args, tmp_dir, captured=ref_dets)
        result["reference"] = dict(ref, images_per_s=args.images / ref["seconds"])
        result["speedup"] = result["ours"]["images_per_s"] / result["reference"]["images_per_s"]
        result["map50_95_abs_diff"] = abs(ours["map50_95"] - ref["map50_95"])
        result["map50_abs_diff"] = abs(ours["map50"] - ref["map50"])
        result.update(agreement_checks(task, variables, batches, ref_dets, ref["map50_95"], args))
    write(result, Path(args.out))
    return 0


def write(result, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "val.small.json" if result["small"] else "val.json"
    (out_dir / name).write_text(json.dumps(result, indent=2))
    ours, ref = result["ours"], result.get("reference")
    line = (f"| {time.strftime('%Y-%m-%d %H:%M')} | {ours['device']} | yolov8{result['scale']} {result['imgsz']}px "
            f"batch {result['batch']} x{result['images']} {'half' if result['half'] else 'fp32'} | "
            f"ours {ours['images_per_s']:.1f} img/s (compile {ours['compile_s']:.1f}s, "
            f"{ours['detections_per_image']:.0f} det/img) | ")
    line += (f"reference {ref['images_per_s']:.1f} img/s on {ref['device']} ({ref['detections_per_image']:.0f} "
             f"det/img), NMS time-limit hits "
             f"{ref['nms_time_limit_hits']} | speedup {result['speedup']:.2f}x | mAP50-95 ours {ours['map50_95']:.4f} "
             f"ref {ref['map50_95']:.4f} (same detections {100 * result['detection_agreement']:.1f}%; metric alone "
             f"differs {result['metric_only_abs_diff']:.1e}) |" if ref else "reference not run |")
    with open(out_dir / "val.md", "a") as f:
        f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    sys.exit(main())
