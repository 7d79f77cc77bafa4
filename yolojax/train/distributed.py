"""Joining a multi-process (multi-host) job: `jax.distributed` reads the job's shape from the environment."""
from __future__ import annotations

import os

import jax


def _multi_process_environment() -> bool:
    env = os.environ
    return bool(env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("SLURM_NTASKS", "1")) > 1
                or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def maybe_initialize_distributed() -> None:
    """Join a multi-host job when the environment describes one (JAX_COORDINATOR_ADDRESS, SLURM or Open MPI with
    several tasks): `jax.distributed.initialize()` reads the rest from it. No-op otherwise or if already joined."""
    if _multi_process_environment() and not getattr(maybe_initialize_distributed, "done", False):
        jax.distributed.initialize()
        maybe_initialize_distributed.done = True
