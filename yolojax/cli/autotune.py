"""`yolojax autotune`: time the train step's convolution algorithms once on this machine's GPU and keep the fastest,
so that deterministic training (`yolojax train`, deterministic=True by default) runs them (`yolojax.conv_tuning`)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from yolojax.bench.timing import queued_ms
from yolojax.bench.train_step import SteppedState, random_step_inputs, repeat_digests
from yolojax.cli import args
from yolojax.cli.bench import comma_list
from yolojax.conv_tuning import FORWARD_CONV_TARGETS, GRADIENT_CONV_TARGETS, conv_results, merge_results
from yolojax.models.yolov8 import SCALES
from yolojax.xla_flags import tuned_conv_file

COMMAND = args.Command(
    name="autotune",
    summary="Time the train step's convolution algorithms on this machine's GPU (one compile per scale, random "
            "data of the given shapes) and keep the fastest in yolojax's cache folder, where every later training "
            "job on this machine loads them: the deterministic step (the train default) then runs tuned algorithms "
            "instead of cuDNN's first-ranked ones. Gradient convolutions are kept only if the tuned step repeats "
            "bit for bit. Tune with the shapes you train with (batch per GPU): results are kept per card, jaxlib "
            "and layer shape. (Not the reference's `tune`, which searches hyper-parameters.)",
    keys={
        "scales": args.own_key("n", "(str) model scales to time, comma-separated"),
        "batch": args.config_key("batch", 64, "(int) images per GPU of the train job (its batch / its GPUs); "
                                              "tuning runs on the first GPU"),
        "imgsz": args.config_key("imgsz"),
        "nc": args.own_key(80, "(int) number of classes of the dataset you train on (sets the head's shapes)"),
        "out": args.own_key(None, "(str) results file to merge into (default: the cache folder's, which training "
                                  "loads)", types=(str,)),
    },
)


def tune_scale(scale: str, opts, folder: str) -> dict:
    """Compile and check one scale's step; returns its numbers and the tuned entries (text) of its convolutions."""
    run, batch, hyper = random_step_inputs(scale, batch=opts.batch, imgsz=opts.imgsz, num_classes=opts.nc,
                                           dtype=jnp.bfloat16, devices=jax.local_devices()[:1])
    start = jax.tree.map(lambda x: x.copy(), run.state)
    stepped = SteppedState(run.step, run.state, batch, hyper)
    # read before any other compile rewrites them
    results, logs = (path.read_text() if path.is_file() else ""
                     for path in (Path(folder, "results.textproto"), Path(folder, "logs.textproto")))
    digests = repeat_digests(stepped.compiled, start, batch, hyper)
    repeats = len(set(digests)) == 1
    targets = FORWARD_CONV_TARGETS + (GRADIENT_CONV_TARGETS if repeats else ())
    text, count = conv_results(results, logs, targets)
    ms = queued_ms(stepped.one, jax.block_until_ready, 10, rounds=1, warmup=2)
    return {"scale": scale, "compile_s": round(stepped.compile_s, 1), "ms_per_step": round(ms, 2),
            "repeats_bit_for_bit": repeats, "convolutions_kept": count,
            "kept": "forward and gradient" if repeats else "forward only", "text": text}


def _main(parsed: args.Parsed) -> int:
    opts = parsed.opts
    scales = comma_list("scales", opts.scales, allowed=tuple(SCALES))
    out = Path(opts.out) if opts.out else tuned_conv_file()
    with tempfile.TemporaryDirectory() as folder:
        dumps = (f"--xla_gpu_dump_autotune_results_to={folder}/results.textproto",
                 f"--xla_gpu_dump_autotune_logs_to={folder}/logs.textproto")
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *dumps]).strip()
        jax.config.update("jax_enable_compilation_cache", False)  # a cached step would time nothing
        if jax.default_backend() != "gpu":  # the first JAX call: the flags above are in
            print(f"yolojax autotune: only GPUs tune convolution algorithms (this backend: {jax.default_backend()}); "
                  "nothing written")
            return 2
        rows = [tune_scale(scale, opts, folder) for scale in scales]
    previous = out.read_text() if out.is_file() else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # training jobs never read a half-written file
    partial.write_text(merge_results(previous, *(row.pop("text") for row in rows)))
    partial.replace(out)
    for row in rows:
        print(json.dumps(row))
        if not row["convolutions_kept"]:
            print(f"yolojax autotune: XLA timed no convolution of the v8{row['scale']} step (is "
                  "--xla_gpu_exclude_nondeterministic_ops or --xla_gpu_autotune_level=0 in XLA_FLAGS?)")
        elif not row["repeats_bit_for_bit"]:
            print(f"yolojax autotune: the v8{row['scale']} step with the tuned gradient convolutions did not repeat "
                  "bit for bit; kept its forward convolutions only")
    print(f"yolojax autotune: wrote {out} ({jax.devices()[0].device_kind}); training jobs on this machine load it "
          "(delete the file to stop)")
    return 0


def cli_main(argv: list[str]) -> int:
    return args.run(COMMAND, argv, _main)
