"""XLA flags yolojax runs with on GPUs, added to `XLA_FLAGS` before JAX creates its backends.

- `--xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL` and `--xla_gpu_graph_min_graph_size=1`: run
  convolutions and the NMS while-loops inside CUDA graphs. Without them every while-loop iteration waits for a
  device-to-host copy of its condition, and small-batch inference is launch-bound: on an H100, YOLOv8n at batch 1
  went from 3.56 to 1.50 ms for forward + NMS (benchmarks/gpu_2026-11-25.md); the batch-64 train step was unchanged.

With `deterministic` (the train config's `deterministic`, True by default as in the reference):
- `--xla_gpu_exclude_nondeterministic_ops=true`: only deterministic GPU algorithms (no atomics in convolution
  weight gradients or scatter-adds), so a step is bit-reproducible. It also halves cold compilation, since far
  fewer cuDNN candidates are autotuned (v8n b64 train step on an H100: see benchmarks/gpu_2026-11-25.md), at the
  cost of a slower step.

The CLI and the benchmark scripts call `apply_default_xla_flags()` first thing. From Python, call it before the first
JAX computation (or set the flags yourself). A flag already present in `XLA_FLAGS` is left as the user set it, and
`YOLOJAX_XLA_FLAGS=0` turns the defaults off.
"""
from __future__ import annotations

import os
from typing import MutableMapping

DEFAULT_FLAGS = (
    "--xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL",
    "--xla_gpu_graph_min_graph_size=1",
)
DETERMINISTIC_FLAGS = ("--xla_gpu_exclude_nondeterministic_ops=true",)


def with_default_flags(current: str, defaults: tuple[str, ...] = DEFAULT_FLAGS) -> str:
    """`current` XLA_FLAGS plus each default whose flag name it does not already set."""
    present = {token.split("=", 1)[0] for token in current.split()}
    added = [flag for flag in defaults if flag.split("=", 1)[0] not in present]
    return " ".join([current.strip(), *added]).strip()


def apply_default_xla_flags(environ: MutableMapping[str, str] = os.environ, *, deterministic: bool = False) -> str:
    """Add `DEFAULT_FLAGS` (and `DETERMINISTIC_FLAGS` if `deterministic`) to `environ["XLA_FLAGS"]` (unless
    YOLOJAX_XLA_FLAGS=0); returns the resulting value. Has an effect only before JAX initialises its backends."""
    if environ.get("YOLOJAX_XLA_FLAGS", "1") == "0":
        return environ.get("XLA_FLAGS", "")
    flags = DEFAULT_FLAGS + (DETERMINISTIC_FLAGS if deterministic else ())
    environ["XLA_FLAGS"] = with_default_flags(environ.get("XLA_FLAGS", ""), flags)
    return environ["XLA_FLAGS"]
