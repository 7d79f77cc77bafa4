"""Augmented training pipeline throughput: yolojax.data vs the reference's YOLODataset, same images, same run.

Both sides run the default training augmentation (Mosaic 4, RandomPerspective translate 0.1 scale 0.5, RandomHSV
0.015/0.7/0.4, fliplr 0.5, Format + batch collation) in one process with one OpenCV / torch thread; img/s per core is
images per second of process CPU time (wall-clock rates are recorded too: on a shared machine they are noisy). Each
timed run is one cold epoch over `--images` JPEGs generated into a temp folder (every image decoded at least once on
both sides), and, with `--cache ram`, an epoch from images preloaded in RAM (preload not timed).

    python benchmarks/scripts/bench_data.py --small          # CPU smoke: 160 px, 48 images
    python benchmarks/scripts/bench_data.py                  # 640 px, 256 images (the GPU host: add --images 1024)
    python benchmarks/scripts/bench_data.py --hsv-on-device  # ours with hsv_on_device: the CPU part timed as
                                                             # above, plus the device's part per batch on JAX's
                                                             # default backend
    python benchmarks/scripts/bench_data.py --warp-on-device # also Mosaic + RandomPerspective pixels on the device

Writes benchmarks/data.json and appends a line to benchmarks/data.md; prints a table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from yolojax.data.shapes import CLASS_NAMES, make_shapes_image, yolo_label_rows  # noqa: E402

AUG = dict(mosaic=1.0, mixup=0.0, copy_paste=0.0, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
           perspective=0.0, flipud=0.0, fliplr=0.5, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4)


def _write_one(args) -> None:
    root, i, imgsz, seed = args
    image, cls, boxes = make_shapes_image(np.random.default_rng([seed, i]), imgsz=imgsz, max_objects=8,
                                          size_range=(0.05, 0.3))
    cv2.imwrite(str(root / "images/train" / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    (root / "labels/train" / f"{i:06d}.txt").write_text(yolo_label_rows(cls, boxes, *image.shape[:2]))


def write_images(root: Path, count: int, imgsz: int, seed: int = 0) -> Path:
    """`count` JPEG shapes images (long side imgsz, short side 0.75-1x) in YOLO layout, written by a process pool;
    returns the data yaml."""
    import multiprocessing

    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(min(os.cpu_count() or 1, 16)) as pool:
        pool.map(_write_one, [(root, i, imgsz, seed) for i in range(count)], chunksize=8)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n{names}")
    return root / "data.yaml"


def time_ours(data_yaml, imgsz, batch, cache, hsv_on_device=False, warp_on_device=False, keep=0):
    """(img/s of process CPU time, img/s wall, the first `keep` batches)."""
    from yolojax.data import build_dataset

    cfg = dict(AUG, data=str(data_yaml), imgsz=imgsz, batch=batch, workers=0, cache=cache, albumentations=False,
               hsv_on_device=hsv_on_device or warp_on_device, warp_on_device=warp_on_device)
    ds = build_dataset(cfg, "train", seed=0)
    start, cpu = time.perf_counter(), time.process_time()
    count, kept = 0, []
    for b in ds.iterator(0, workers=0, threads=1):
        count += len(b["images"])
        if len(kept) < keep:
            kept.append(b)
    return count / (time.process_time() - cpu), count / (time.perf_counter() - start), kept


def time_device_part(batches):
    """(median ms of the device's part of the augmentation (`finish_augmentation`: the warp render and / or the HSV
    tables) on one device-resident batch, the device's name) on JAX's default backend. Run after the CPU timings so
    that JAX's threads do not share the cores with them."""
    import jax

    from yolojax.bench.timing import median_ms
    from yolojax.data.device.augment import WARP_PREFIX, finish_augmentation

    apply = jax.jit(finish_augmentation)
    keys = lambda b: [k for k in b if k in ("images", "hsv_lut") or k.startswith(WARP_PREFIX)]  # noqa: E731
    on_device = [jax.device_put({k: b[k] for k in keys(b)}) for b in batches]
    times = [median_ms(lambda b=b: apply(b), jax.block_until_ready, iters=5, warmup=1) for b in on_device]
    return float(np.median(times)), str(jax.devices()[0].device_kind)


def time_reference(data_yaml, imgsz, batch, cache):
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    torch.set_num_threads(1)
    hyp = get_cfg(overrides=dict(AUG, imgsz=imgsz, batch=batch))
    data = {"names": dict(enumerate(CLASS_NAMES)), "nc": len(CLASS_NAMES), "channels": 3}
    ds = YOLODataset(img_path=str(Path(data_yaml).parent / "images/train"), imgsz=imgsz, batch_size=batch,
                     augment=True, hyp=hyp, cache=cache, data=data)
    order = np.random.default_rng(0).permutation(len(ds))
    start, cpu = time.perf_counter(), time.process_time()
    count = 0
    for k in range(0, len(order) - batch + 1, batch):
        items = [ds[int(i)] for i in order[k:k + batch]]
        count += len(YOLODataset.collate_fn(items)["img"])
    return count / (time.process_time() - cpu), count / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="160 px, 48 images: a quick CPU check")
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cache", choices=["none", "ram", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per side; the best is reported")
    parser.add_argument("--hsv-on-device", action="store_true",
                        help="ours with hsv_on_device=True (CPU part), plus the device's apply_hsv_luts per batch")
    parser.add_argument("--warp-on-device", action="store_true",
                        help="ours with warp_on_device=True too: Mosaic + RandomPerspective pixels on the device")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "benchmarks"))
    args = parser.parse_args(argv)
    device_part = args.hsv_on_device or args.warp_on_device
    mode = "ours (warp + HSV on device)" if args.warp_on_device else "ours (HSV on device)" if device_part else "ours"
    imgsz = args.imgsz or (160 if args.small else 640)
    count = args.images or (48 if args.small else 256)
    cv2.setNumThreads(1)
    caches = {"none": [False], "ram": ["ram"], "both": [False, "ram"]}[args.cache]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        data_yaml = write_images(Path(tmp), count, imgsz)
        for cache in caches:
            runs = [time_ours(data_yaml, imgsz, args.batch, cache, args.hsv_on_device, args.warp_on_device,
                              keep=4 * device_part) for _ in range(args.repeats)]
            ours = max(runs, key=lambda r: r[0])
            ref = max(time_reference(data_yaml, imgsz, args.batch, cache) for _ in range(args.repeats))
            rows.append({"imgsz": imgsz, "images": count, "batch": args.batch, "cache": cache or "none",
                         "mode": mode,
                         "ours_img_per_s_per_core": round(ours[0], 1), "reference_img_per_s_per_core": round(ref[0], 1),
                         "speedup": round(ours[0] / ref[0], 2), "ours_img_per_s_wall": round(ours[1], 1),
                         "reference_img_per_s_wall": round(ref[1], 1)})
            if device_part:
                ms, device = time_device_part(runs[0][2])
                rows[-1].update(device_ms_per_batch=round(ms, 2), device=device)
    report(rows, Path(args.out), args.small)
    return 0


def report(rows, out: Path, small: bool):
    header = "| imgsz | images | cache | mode | yolojax img/s/core | reference img/s/core | speedup | device part |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['imgsz']} | {r['images']} | {r['cache']} | {r['mode']} | {r['ours_img_per_s_per_core']} | "
              f"{r['reference_img_per_s_per_core']} | {r['speedup']}x | {device_note(r) or '-'} |" for r in rows]
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cpu_count": os.cpu_count(), "cv2": cv2.__version__, "small": small,
            "threads": 1, "augment": AUG}
    results = out / "data.json"
    previous = json.loads(results.read_text()) if results.is_file() else []
    previous = previous if isinstance(previous, list) else [previous]
    results.write_text(json.dumps(previous + [{**meta, "rows": rows}], indent=1) + "\n")
    with open(out / "data.md", "a") as f:
        for r in rows:
            note = device_note(r)
            f.write(f"- {meta['date']} {meta['host']} ({meta['cpu_count']} cpus), {r['imgsz']} px, {r['images']} "
                    f"images, cache={r['cache']}: {r['mode'].replace('ours', 'yolojax')} "
                    f"{r['ours_img_per_s_per_core']} img/s/core vs reference {r['reference_img_per_s_per_core']} -> "
                    f"{r['speedup']}x{f' (+ {note})' if note else ''}\n")


def device_note(row):
    """'device part X ms/batch on DEVICE' for a row that leaves work to the device, else ''."""
    if "device_ms_per_batch" not in row:
        return ""
    return f"device part {row['device_ms_per_batch']} ms/batch of {row['batch']} on {row['device']}"


if __name__ == "__main__":
    sys.exit(main())
