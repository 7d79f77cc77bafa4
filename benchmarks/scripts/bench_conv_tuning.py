"""The deterministic train step with tuned convolutions (`yolojax autotune`, `yolojax.conv_tuning`) against the plain
one.

    python3 benchmarks/scripts/bench_conv_tuning.py --scale n --rounds 2 --out tuning.json   # on the GPU host

One process tunes (`yolojax autotune` into a file of its own, not the cache folder's). Then, per round, one process
each: the deterministic step as the train job compiles it without a tuned file, and the same loading the tuned
file. Each reports its compile time, ms per step (queued), and a digest of the state after two steps from the same
start, three times in the process: equal digests within a process and across the rounds of a variant mean the step
repeats bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from yolojax.conv_tuning import top_level_blocks  # noqa: E402
from yolojax.xla_flags import DETERMINISTIC_FLAGS, LOAD_TUNED_FLAG, TUNING_FLAGS  # noqa: E402


def child(args) -> dict:
    """Build, compile and time the step under this process's XLA_FLAGS; digest two steps three times."""
    import jax

    from yolojax.bench.timing import queued_ms
    from yolojax.bench.train_step import SteppedState, random_step_inputs, repeat_digests

    run, batch, hyper = random_step_inputs(args.scale, batch=args.batch, imgsz=args.imgsz)
    start = jax.tree.map(lambda x: x.copy(), run.state)
    stepped = SteppedState(run.step, run.state, batch, hyper)
    digests = repeat_digests(stepped.compiled, start, batch, hyper)
    ms = queued_ms(stepped.one, jax.block_until_ready, 30, rounds=3, warmup=3)
    return {"compile_s": stepped.compile_s, "ms_per_step": ms, "digests": digests,
            "device": jax.devices()[0].device_kind}


def run_process(command: list[str], flags: list[str], timeout: float) -> dict:
    env = dict(os.environ, XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip(),
               YOLOJAX_XLA_FLAGS="0")  # exactly the flags named here
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"failed": done.returncode, "stdout_tail": done.stdout[-1000:], "stderr_tail": done.stderr[-2000:]}
    return {**json.loads(lines[-1]), "wall_s": time.perf_counter() - start, "xla_flags": env["XLA_FLAGS"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    shapes = ["--scale", args.scale, "--batch", str(args.batch), "--imgsz", str(args.imgsz)]
    rows: dict = {"scale": args.scale, "batch": args.batch, "imgsz": args.imgsz}
    with tempfile.TemporaryDirectory() as tmp:
        tuned = f"{tmp}/tuned.textproto"
        tune = ["-m", "yolojax.cli", "autotune", f"scales={args.scale}", f"batch={args.batch}", f"imgsz={args.imgsz}",
                f"out={tuned}"]
        rows["tune"] = run_process(tune, [*TUNING_FLAGS], args.timeout)
        print("tune", json.dumps(rows["tune"]), flush=True)
        text = Path(tuned).read_text() if Path(tuned).exists() else ""
        rows["tuned_entries"] = len(top_level_blocks(text, "entries"))
        load = f"{LOAD_TUNED_FLAG}={tuned}"
        variants = [("deterministic", [*DETERMINISTIC_FLAGS]), ("tuned", [*DETERMINISTIC_FLAGS, load])]
        for r in range(args.rounds):
            for name, flags in variants:
                rows[f"{name}_{r}"] = run_process([__file__, "--child", *shapes], flags, args.timeout)
                print(name, json.dumps(rows[f"{name}_{r}"]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        Path(args.out).with_suffix(".textproto").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
