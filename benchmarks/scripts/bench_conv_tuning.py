"""The deterministic train step with tuned forward convolutions (`yolojax.conv_tuning`) against the plain one.

    python3 benchmarks/scripts/bench_conv_tuning.py --scale n --rounds 2 --out tuning.json   # on the GPU host

One process tunes: the step compiled without the deterministic flag and without fusion autotuning, dumping XLA's
autotuning results and log; the forward convolutions' entries are kept. Then, per round, one process each: the
deterministic step as the train job compiles it, and the same loading the kept entries. Each reports its compile
time, ms per step (queued), and a digest of the state after two steps from the same start, three times in the
process: equal digests within a process and across the rounds of a variant mean the step repeats bit for bit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from yolojax.conv_tuning import FORWARD_CONV_TARGETS, GRADIENT_CONV_TARGETS, TUNING_FLAGS, conv_results  # noqa: E402
from yolojax.xla_flags import DETERMINISTIC_FLAGS  # noqa: E402

KINDS = {"forward": FORWARD_CONV_TARGETS, "all": FORWARD_CONV_TARGETS + GRADIENT_CONV_TARGETS}


def child(args) -> dict:
    """Build, compile and time the step under this process's XLA_FLAGS; digest two steps three times."""
    import jax
    import numpy as np

    from yolojax.bench.timing import queued_ms
    from yolojax.bench.train_step import SteppedState, padded_targets, sgd_plan
    from yolojax.detectors import YOLOv8Task
    from yolojax.train.optim import hyper_at
    from yolojax.train.setup import build_training
    from yolojax.train.step import replicate, shard_batch

    task = YOLOv8Task(scale=args.scale, num_classes=80, dtype=jax.numpy.bfloat16)
    plan = sgd_plan(args.batch)
    run = build_training(task, plan, (args.imgsz, args.imgsz))
    hyper = replicate(hyper_at(plan, 10_000, 10), run.mesh)
    rng = np.random.default_rng(0)
    cls, bboxes, mask = padded_targets(rng, args.batch, 8, 16, 80)
    images = rng.integers(0, 256, size=(args.batch, args.imgsz, args.imgsz, 3), dtype=np.uint8)
    data = shard_batch({"images": images, "bboxes": bboxes, "cls": cls, "mask": mask}, run.mesh)
    start = jax.tree.map(lambda x: x.copy(), run.state)
    stepped = SteppedState(run.step, run.state, data, hyper)

    digests = []
    for _ in range(3):
        state = jax.tree.map(lambda x: x.copy(), start)
        for _ in range(2):
            state, _ = stepped.compiled(state, data, hyper)
        digest = hashlib.sha256()
        for leaf in jax.tree.leaves(jax.device_get(state)):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        digests.append(digest.hexdigest()[:16])
    ms = queued_ms(stepped.one, jax.block_until_ready, 30, rounds=3, warmup=3)
    return {"compile_s": stepped.compile_s, "ms_per_step": ms, "digests": digests,
            "device": jax.devices()[0].device_kind}


def run_child(argv: list[str], flags: list[str], timeout: float) -> dict:
    env = dict(os.environ, XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip())
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"failed": done.returncode, "stderr_tail": done.stderr[-2000:]}
    return {**json.loads(lines[-1]), "wall_s": time.perf_counter() - start, "xla_flags": env["XLA_FLAGS"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", default="forward", help="which tuned convolutions to load, each a variant: "
                        "forward, all (also the gradients' algorithms: a check of determinism, not a default)")
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    common = ["--scale", args.scale, "--batch", str(args.batch), "--imgsz", str(args.imgsz)]
    rows: dict = {"scale": args.scale, "batch": args.batch, "imgsz": args.imgsz}
    with tempfile.TemporaryDirectory() as tmp:
        results, logs, tuned = (f"{tmp}/{name}.textproto" for name in ("results", "logs", "tuned"))
        rows["tune"] = run_child(common, [*TUNING_FLAGS, f"--xla_gpu_dump_autotune_results_to={results}",
                                          f"--xla_gpu_dump_autotune_logs_to={logs}"], args.timeout)
        print(json.dumps(rows["tune"]), flush=True)
        read = lambda path: Path(path).read_text() if Path(path).exists() else ""  # noqa: E731 (none on a CPU)
        variants = [("deterministic", [*DETERMINISTIC_FLAGS])]
        for kind in args.kinds.split(","):
            text, count = conv_results(read(results), read(logs), KINDS[kind])
            Path(f"{tuned}.{kind}").write_text(text)
            rows[f"{kind}_conv_entries"] = count
            variants.append((f"tuned_{kind}", [*DETERMINISTIC_FLAGS,
                                               f"--xla_gpu_load_autotune_results_from={tuned}.{kind}"]))
        text = Path(f"{tuned}.forward").read_text() if Path(f"{tuned}.forward").exists() else ""
        for r in range(args.rounds):
            for name, flags in variants:
                rows[f"{name}_{r}"] = run_child(common, flags, args.timeout)
                print(name, json.dumps(rows[f"{name}_{r}"]), flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
            Path(args.out).with_suffix(".textproto").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
