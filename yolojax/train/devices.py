"""The `device` key: which of JAX's devices a run trains on (the mesh of yolojax.train.step is built over them).

`device=cpu` also restricts JAX to its CPU platform (`jax_platforms`) when no backend has started yet, which is
the case in `yolojax train`: an accelerator is then never initialised (no memory reserved on it), and everything
that asks JAX for its default backend sees the CPU. Started later from Python, the run still trains on the CPU
devices (its mesh and `jax.default_device`). Device ids are positions among each process's devices of the default
backend, as `CUDA_VISIBLE_DEVICES`-style ids are in the reference (`device=0,1`).
"""
from __future__ import annotations

from typing import Any

import jax

from yolojax.train.config import ConfigError, parse_device


def restrict_platform(spec: Any) -> None:
    """Before the first JAX computation: `device=cpu` keeps JAX off any accelerator (no effect once JAX started)."""
    if parse_device(spec) == "cpu":
        jax.config.update("jax_platforms", "cpu")


def select_devices(spec: Any) -> list:
    """The devices of every process that the run's mesh spans, for a `device` value (see `parse_device`).

    Raises ConfigError (one line) when this machine has no such platform or device id.
    """
    parsed = parse_device(spec)
    if parsed is None:
        return list(jax.devices())
    if isinstance(parsed, str):
        try:
            return list(jax.devices(parsed))
        except RuntimeError:
            raise ConfigError(f"device={spec}: no {parsed} device here (JAX sees {describe(jax.devices())})") from None
    by_process: dict[int, list] = {}
    for device in sorted(jax.devices(), key=lambda d: d.id):
        by_process.setdefault(device.process_index, []).append(device)
    local = by_process[jax.process_index()]
    wrong = [i for i in parsed if i >= len(local)]
    if wrong:
        raise ConfigError(f"device={spec}: no device {wrong[0]}; this process has {len(local)} "
                          f"({describe(local)}): use ids 0..{len(local) - 1}, cpu or gpu")
    return [devices[i] for devices in by_process.values() for i in parsed if i < len(devices)]


def local_devices(devices: list) -> list:
    """The devices of `devices` that this process drives."""
    return [d for d in devices if d.process_index == jax.process_index()]


def describe(devices: list) -> str:
    """`"2 gpu"`-style count per platform of `devices`."""
    counts: dict[str, int] = {}
    for device in devices:
        counts[device.platform] = counts.get(device.platform, 0) + 1
    return ", ".join(f"{n} {platform}" for platform, n in counts.items())
