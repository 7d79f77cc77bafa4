"""XLA flags yolojax runs with on GPUs, chosen per job and added to `XLA_FLAGS` before JAX creates its backends.

Inference (`job="infer"`: predict, val, the inference benchmarks) adds `--xla_gpu_enable_command_buffer=+CONVOLUTION`
and `--xla_gpu_graph_min_graph_size=1`: the convolutions join the fusions in CUDA graphs, so small-batch inference
launches a few graphs instead of a few hundred kernels. While-loops are left out (`+WHILE`): with them, the NMS
while-loops inside a CUDA graph returned wrong detections at batch 1 on H200s, intermittently (image kept 0 or 148
boxes where every other run kept 38; `benchmarks/scripts/check_inference_variables.py`,
benchmarks/2026-11-26_speed/README.md). Without them each loop iteration waits for a device-to-host copy of its
condition: one copy per call for the usual image, whose NMS needs one step of its loop, run before the loop.

Training (`job="train"`: train, the train-step benchmarks) adds no command-buffer flag. The convolutions in CUDA
graphs made the one-GPU step 2% faster, but a one-GPU step with XLA's autotuned kernels then failed at its first
run (`Failed to trace command buffer: CUDNN_STATUS_EXECUTION_FAILED`, three processes of three, two H200s), and
the 2-GPU step never finished with them (`Failed to destroy CUDA graph: CUDA_ERROR_INVALID_VALUE`, then an abort
in XLA's rendezvous) (benchmarks/2026-11-27_conv_tuning/README.md, benchmarks/2026-11-26_multi_gpu/README.md).
Validation inside a training run runs under the training's flags.

Training also adds `--xla_gpu_enable_latency_hiding_scheduler=false`. That scheduler overlaps collectives with
compute; the step has one all-reduce of the flat gradient, which nothing after it can overlap, and on one GPU none.
XLA also runs the scheduler over each of the ~130 one-convolution programs it compiles to configure the
convolutions, so without it the cold compile is shorter; the step is as fast, on one GPU and on two
(benchmarks/2026-11-27_affine_scheduler/README.md).

With `deterministic` (the train config's `deterministic`, True by default as in the reference):
`--xla_gpu_exclude_nondeterministic_ops=true` keeps to deterministic GPU algorithms (no atomics in convolution
weight gradients or scatter-adds), so a step is bit-reproducible. It also halves the cold compile, since far fewer
cuDNN candidates are autotuned, at the cost of a slower step (benchmarks/2026-11-25_profiles_flags/README.md).

Convolution algorithms tuned once per machine (`yolojax autotune`, `yolojax.conv_tuning`): where the file of tuned
results for this jaxlib exists in the cache folder, training jobs load it
(`--xla_gpu_load_autotune_results_from`), so that the deterministic step runs the tuned algorithms instead of
cuDNN's first-ranked ones. The tuning job itself (`job="autotune"`) compiles without fusion autotuning and loads
nothing.

The CLI and the benchmark scripts call `apply_default_xla_flags(job=...)` first thing. From Python, call it before
the first JAX computation (or set the flags yourself). A flag already present in `XLA_FLAGS` is left as the user set
it, and `YOLOJAX_XLA_FLAGS=0` turns the defaults off.

`enable_compilation_cache()` (also called by the CLI first thing) keeps compiled programs (and, without the
deterministic flag, autotuning results) on disk, so a second run skips most of the compile. `jax_setting(name,
value)` sets a `jax.config` option for a block.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any, Iterator, MutableMapping

import jax

from yolojax.cache import cache_root

COMMAND_BUFFER_FLAGS = (
    "--xla_gpu_enable_command_buffer=+CONVOLUTION",
    "--xla_gpu_graph_min_graph_size=1",
)
DETERMINISTIC_FLAGS = ("--xla_gpu_exclude_nondeterministic_ops=true",)
TUNING_FLAGS = ("--xla_gpu_experimental_enable_fusion_autotuner=false",)
TRAIN_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=false",)
JOB_FLAGS = {"infer": COMMAND_BUFFER_FLAGS, "train": TRAIN_FLAGS, "autotune": TUNING_FLAGS}
LOAD_TUNED_FLAG = "--xla_gpu_load_autotune_results_from"


def tuned_conv_file(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Where `yolojax autotune` keeps the tuned convolution algorithms for the installed jaxlib (every card's entries
    in one file: XLA keys each by its device and instruction)."""
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = "unknown"
    return cache_root(environ) / "conv_autotune" / f"jaxlib-{jaxlib}.textproto"


def flags_for(job: str, *, deterministic: bool = False) -> tuple[str, ...]:
    """The default flags of `job` ("train", "infer" or "autotune"), plus the deterministic ones if asked."""
    if job not in JOB_FLAGS:
        raise ValueError(f"job={job!r}: use one of {sorted(JOB_FLAGS)}")
    return JOB_FLAGS[job] + (DETERMINISTIC_FLAGS if deterministic else ())


def with_default_flags(current: str, defaults: tuple[str, ...]) -> str:
    """`current` XLA_FLAGS plus each default whose flag name it does not already set."""
    present = {token.split("=", 1)[0] for token in current.split()}
    added = [flag for flag in defaults if flag.split("=", 1)[0] not in present]
    return " ".join([current.strip(), *added]).strip()


def apply_default_xla_flags(environ: MutableMapping[str, str] = os.environ, *, job: str = "infer",
                            deterministic: bool = False) -> str:
    """Add `flags_for(job, deterministic=...)` (and for training the tuned convolutions' file, where it exists) to
    `environ["XLA_FLAGS"]` (unless YOLOJAX_XLA_FLAGS=0); returns the resulting value. Has an effect only before JAX
    initialises its backends."""
    if environ.get("YOLOJAX_XLA_FLAGS", "1") == "0":
        return environ.get("XLA_FLAGS", "")
    flags = flags_for(job, deterministic=deterministic)
    tuned = tuned_conv_file(environ) if job == "train" else None
    if tuned is not None and tuned.is_file() and tuned.stat().st_size:
        flags += (f"{LOAD_TUNED_FLAG}={tuned}",)
    environ["XLA_FLAGS"] = with_default_flags(environ.get("XLA_FLAGS", ""), flags)
    return environ["XLA_FLAGS"]


def deterministic_in(xla_flags: str) -> bool:
    """Whether `xla_flags` (an XLA_FLAGS value) keep XLA to deterministic GPU algorithms."""
    name = DETERMINISTIC_FLAGS[0].split("=", 1)[0]
    values = [token.partition("=")[2].lower() for token in xla_flags.split() if token.split("=", 1)[0] == name]
    return bool(values) and values[-1] in ("", "true", "1")


def enable_compilation_cache(folder: str | Path | None = None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Keep compiled programs on disk in `folder` (default: $YOLOJAX_CACHE/jax or ~/.cache/yolojax/jax, unless JAX's
    cache folder is set already) so repeated runs start at once.

    Under the deterministic flag (in `environ["XLA_FLAGS"]`) XLA's autotuning results stay out of whichever cache
    folder is in use: XLA keys them by device and instruction, not by flags, so a deterministic compile read the
    algorithms that a non-deterministic run on the machine had timed and picked: another step, with other sums
    (benchmarks/2026-11-27_step_gaps/README.md). A deterministic compile left no results there to lose."""
    if deterministic_in(environ.get("XLA_FLAGS", "")):
        jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    already_set = environ.get("JAX_COMPILATION_CACHE_DIR") or getattr(jax.config, "jax_compilation_cache_dir", None)
    if folder is None and already_set:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder or cache_root(environ) / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@contextlib.contextmanager
def jax_setting(name: str, value: Any) -> Iterator[None]:
    """The `jax.config` option `name` (e.g. "jax_enable_x64") set to `value` inside the block, restored after it."""
    before = getattr(jax.config, name)
    jax.config.update(name, value)
    try:
        yield
    finally:
        jax.config.update(name, before)
