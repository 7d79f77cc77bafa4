"""The reference's training step under PyTorch DistributedDataParallel (NCCL, one process per GPU, fp16 AMP), the
peer of `benchmarks/scripts/bench_scaling.py`; GPU-resident random data, `--batch` images per GPU.

    python3 -m torch.distributed.run --nproc_per_node 2 benchmarks/scripts/bench_ddp_reference.py \
        --scales n,s --out r.json
    python3 benchmarks/scripts/bench_ddp_reference.py --scales n,s --out r1.json  # one GPU, no DDP
    ... --compile   # the model under torch.compile, as the newest reference's trainer does (8.4.x on PYTHONPATH)
Rank 0 prints one JSON line per scale and writes the list to `--out`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from yolojax.bench.timing import share_process_with_reference  # noqa: E402

share_process_with_reference()
from yolojax.bench.reference import time_reference_train_step  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="n,s")
    parser.add_argument("--batch", type=int, default=64, help="images per GPU")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (inductor, default mode)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for scale in args.scales.split(","):
        row = time_reference_train_step(scale, batch=args.batch, imgsz=args.imgsz, steps=args.steps,
                                        compile=args.compile)
        if row["rank"] == 0:
            print(json.dumps(row), flush=True)
        rows.append(row)
    if rows[0]["rank"] == 0 and args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
