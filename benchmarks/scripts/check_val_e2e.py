"""End-to-end validation check: reference-trained YOLOv8n weights, converted, scored by our `yolojax val` and by
the reference's own val on the same images and labels (same letterbox, conf 0.001, iou 0.7, max_det 300).

    python benchmarks/scripts/check_val_e2e.py --epochs 10      # trains the reference on the shapes dataset first (CPU)
    python benchmarks/scripts/check_val_e2e.py --weights best.pt

Writes benchmarks/val_e2e.json and prints both sides' P, R, mAP50, mAP50-95 and the differences.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "True")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

if not hasattr(np, "trapz"):  # ultralytics 8.2.103 calls np.trapz (numpy >= 2.4 removed it)
    np.trapz = np.trapezoid


def train_reference(data_yaml: str, imgsz: int, epochs: int, project: str) -> Path:
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").train(data=data_yaml, imgsz=imgsz, epochs=epochs, batch=16, workers=0, device="cpu",
                               amp=False, plots=False, val=False, project=project, name="ref", seed=0,
                               exist_ok=True, verbose=False)
    return Path(project) / "ref" / "weights" / "last.pt"


def reference_val(weights: Path, data_yaml: str, imgsz: int) -> dict:
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(data=data_yaml, imgsz=imgsz, batch=32, conf=0.001, iou=0.7, max_det=300,
                                     device="cpu", plots=False, verbose=False, workers=0)
    p, r, map50, map50_95 = metrics.box.mean_results()
    return {"precision": p, "recall": r, "map50": map50, "map50_95": map50_95}


def our_val(weights: Path, data_yaml: str, imgsz: int, workdir: Path) -> dict:
    converted = workdir / "converted"
    run = [sys.executable, "-m", "yolojax.cli"]
    subprocess.run(run + ["convert", str(weights), str(converted), "--trust-pickle"], check=True)
    out = subprocess.run(run + ["val", f"weights={converted}", f"data={data_yaml}", f"imgsz={imgsz}", "rect=true",
                                "mode=ultralytics", "plots=false", f"save_dir={workdir / 'val'}"],
                         check=True, capture_output=True, text=True).stdout
    print(out)
    row = next(line for line in out.splitlines() if line.split()[:1] == ["all"]).split()
    return {"precision": float(row[3]), "recall": float(row[4]), "map50": float(row[5]), "map50_95": float(row[6])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="reference checkpoint (.pt); default: train one")
    parser.add_argument("--data", default=None, help="data yaml (default: the shapes dataset)")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "val_e2e.json"))
    args = parser.parse_args(argv)
    from yolojax.data.shapes import ensure_shapes_dataset

    data_yaml = str(args.data or ensure_shapes_dataset())
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else train_reference(data_yaml, args.imgsz, args.epochs, tmp)
        ref = reference_val(weights, data_yaml, args.imgsz)
        ours = our_val(weights, data_yaml, args.imgsz, Path(tmp))
    diff = {k: abs(ours[k] - ref[k]) for k in ref}
    result = {"data": data_yaml, "imgsz": args.imgsz, "epochs": args.epochs, "reference": ref, "ours": ours,
              "abs_diff": diff}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if max(diff["map50"], diff["map50_95"]) <= 0.002 else 1


if __name__ == "__main__":
    sys.exit(main())
