"""`yolojax bench`: the training step timed on this machine, ours and the reference's
(`yolojax.bench.train_step`); a table printed and written as JSON + markdown."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from yolojax.bench.reference import time_reference_train_step
from yolojax.bench.train_step import markdown_table, time_components, time_train_step
from yolojax.cli import args
from yolojax.models.yolov8 import SCALES
from yolojax.train.config import ConfigError
from yolojax.xla_flags import apply_default_xla_flags, enable_compilation_cache

COMMAND = args.Command(
    name="bench",
    summary="Time the full training step (forward, assigner, losses, backward, optimizer, EMA) on device-resident "
            "random data and, in the same run on the same device, the reference's (ultralytics, PyTorch eager, fp16 "
            "AMP). bf16 on GPU / TPU, fp32 on CPU.",
    keys={
        "scales": args.own_key("n,s", "(str) model scales to time, comma-separated"),
        "batch": args.config_key("batch", 64),
        "imgsz": args.config_key("imgsz"),
        "max_boxes": args.own_key("16", "(str) padded ground-truth rows per image to time, comma-separated"),
        "steps": args.own_key(30, "(int) timed steps (after the warmup)"),
        "reference": args.own_key(True, "(bool) also time the reference (needs CUDA torch); --no-reference skips it"),
        "reference_compile": args.own_key(False, "(bool) also time the reference under torch.compile"),
        "ours": args.own_key(True, "(bool) time our step (false: the reference alone, e.g. another ultralytics "
                                   "version on PYTHONPATH)"),
        "breakdown": args.own_key(False, "(bool) also time forward / backward / loss / optimizer separately"),
        "small": args.own_key(False, "(bool) CPU smoke run: batch 2, 128 px, 2 steps, no reference"),
        "out": args.own_key("benchmarks/train_step", "(str) results file stem (.json and .md are written)"),
        "deterministic": args.config_key("deterministic", False,
                                         "(bool) deterministic GPU kernels (yolojax.xla_flags); off here so the "
                                         "table shows the fastest step (`yolojax train` defaults to true)"),
        "compile_cache": args.own_key(None, "(str) persistent XLA compilation cache folder (a second run then skips "
                                            "compiling)", types=(str,)),
    },
)


def comma_list(key: str, text: str, parse=str, allowed=None) -> list:
    """`"n,s"` -> ["n", "s"]; a ConfigError naming the key for an item that does not parse or is not allowed."""
    try:
        items = [parse(item.strip()) for item in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"command line: {key}={text!r} must be a comma-separated list of {parse.__name__}") from None
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        raise ConfigError(f"command line: {key}={text!r}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return items


def _main(parsed: args.Parsed) -> int:
    opts = parsed.opts
    scales = comma_list("scales", opts.scales, allowed=tuple(SCALES))
    max_boxes_list = comma_list("max_boxes", opts.max_boxes, int)
    apply_default_xla_flags(job="train", deterministic=opts.deterministic)  # before the first JAX computation
    if opts.compile_cache:
        enable_compilation_cache(opts.compile_cache)

    dtype = jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    batch, imgsz, steps, reference = opts.batch, opts.imgsz, opts.steps, opts.reference
    if opts.small:
        batch, imgsz, steps, reference = 2, 128, 2, False
    rows, breakdown = [], []
    for scale in scales:
        refs = []
        for compiled in (False, True) if opts.reference_compile else (False,):
            if reference:
                refs.append(time_reference_train_step(scale, batch=batch, imgsz=imgsz, steps=steps, compile=compiled))
                rows.append(refs[-1])
                print(json.dumps(refs[-1]), flush=True)
        for max_boxes in max_boxes_list if opts.ours else ():
            ours = time_train_step(scale, batch=batch, imgsz=imgsz, max_boxes=max_boxes,
                                   boxes_per_image=min(8, max_boxes), steps=steps, dtype=dtype,
                                   warmup=1 if opts.small else 5)
            ours["xla_flags"] = os.environ.get("XLA_FLAGS", "")
            for ref in refs:
                ours["speedup_vs_" + ref["impl"].replace(" ", "_")] = ref["ms_per_step"] / ours["ms_per_step"]
            rows.append(ours)
            print(json.dumps(ours), flush=True)
        if opts.breakdown:
            parts = time_components(scale, batch=batch, imgsz=imgsz, dtype=dtype, max_boxes=max_boxes_list[0],
                                    repeats=3 if opts.small else 20)
            breakdown.append(parts)
            print(json.dumps(parts), flush=True)
    table = markdown_table(rows)
    print(table)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"steps": rows, "breakdown": breakdown}, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
