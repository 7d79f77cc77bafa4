"""A run of several processes (multi-host): joining the job through `jax.distributed`, and the few host-side values
its processes must agree on (run directory, validation metrics, when to stop).

Every process runs the same loop on the same replicated state; what each computes on its host alone (a path, a time,
metrics that a non-deterministic kernel may round differently) comes from one place, through a JAX collective
(`jax.experimental.multihost_utils`), so that all processes take the same branches and call the same collectives
(the step, orbax's saves) in the same order. See docs/distributed.md.

Environment read here (JAX itself reads JAX_COORDINATOR_ADDRESS, JAX_LOCAL_DEVICE_IDS and the SLURM / Open MPI /
Cloud TPU variables):
  JAX_NUM_PROCESSES, JAX_PROCESS_ID   the job's size and this process's index, passed to jax.distributed.initialize
  YOLOJAX_DISTRIBUTED=1               join even when nothing above describes a job (JAX detects it: Cloud TPU pods)
  YOLOJAX_HEARTBEAT_TIMEOUT_S         seconds without a heartbeat after which a process counts as dead (default 100,
                                      JAX's); the job's other processes then stop with an error
  YOLOJAX_INIT_TIMEOUT_S              seconds to wait for every process to join (default 300, JAX's)
"""
from __future__ import annotations

import json
import os
import socket
import zlib
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

HEARTBEAT_TIMEOUT_S = 100
INIT_TIMEOUT_S = 300


def _env_int(name: str, environ: Mapping[str, str] = os.environ) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


def describes_a_job(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `environ` makes this process one of a multi-process job (module docstring)."""
    return bool(environ.get("JAX_COORDINATOR_ADDRESS") or environ.get("YOLOJAX_DISTRIBUTED") == "1"
                or any((_env_int(name, environ) or 1) > 1
                       for name in ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")))


def initialize_arguments() -> dict:
    """Keyword arguments for `jax.distributed.initialize` from the environment (module docstring)."""
    args = {"heartbeat_timeout_seconds": _env_int("YOLOJAX_HEARTBEAT_TIMEOUT_S") or HEARTBEAT_TIMEOUT_S,
            "initialization_timeout": _env_int("YOLOJAX_INIT_TIMEOUT_S") or INIT_TIMEOUT_S}
    count, index = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if (count is None) != (index is None):
        raise ValueError("JAX_NUM_PROCESSES and JAX_PROCESS_ID go together: set both (or neither, under SLURM / "
                         "Open MPI / Cloud TPU, which JAX reads itself)")
    if count is not None and index is not None:
        if not 0 <= index < count:
            raise ValueError(f"JAX_PROCESS_ID={index} is not in 0..JAX_NUM_PROCESSES-1 ({count - 1})")
        args.update(num_processes=count, process_id=index)
    return args


def maybe_initialize_distributed() -> bool:
    """Join a multi-process job when the environment describes one (module docstring); no-op otherwise or if joined
    already. Must come before any JAX computation. Returns whether this process is part of a joined job.

    If a process of the job dies, the others stop with an error rather than wait for it: a collective in flight
    fails at once (on CPU, gloo reports the closed connection) and JAX's coordination service ends every process
    once the dead one missed its heartbeats for YOLOJAX_HEARTBEAT_TIMEOUT_S.
    """
    if jax.distributed.is_initialized():
        return True
    if not describes_a_job():
        return False
    jax.distributed.initialize(**initialize_arguments())
    return True


def is_multi_process() -> bool:
    """Whether this run has several processes (collectives between hosts are then needed to agree)."""
    return jax.process_count() > 1


def from_main(value: Any) -> Any:
    """Process 0's `value` (JSON-able: numbers, strings, lists, dicts) on every process; itself with one process.

    Every process must call this at the same point. The value comes back as JSON reads it (tuples as lists); floats
    bit-exact (JSON writes the shortest repr that reads back the same double).
    """
    if not is_multi_process():
        return value

    data = json.dumps(value, default=_plain).encode()
    size = int(multihost_utils.broadcast_one_to_all(np.array([len(data)], np.int32))[0])
    buffer = np.full(max(256, 1 << (size - 1).bit_length()), ord(" "), np.uint8)  # few sizes: few compiles
    if jax.process_index() == 0:
        buffer[:size] = np.frombuffer(data, np.uint8)
    return json.loads(bytes(multihost_utils.broadcast_one_to_all(buffer)).decode())


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        return np.asarray(value).tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-able: {value!r}")


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process (every process must call this at the same point)."""
    if not is_multi_process():
        return bool(flag)

    return bool(np.any(multihost_utils.process_allgather(np.array([bool(flag)], np.int32))))


def host_leader() -> int:
    """The lowest process index on this process's host (itself with one process); every process must call this at
    the same point."""
    if not is_multi_process():
        return jax.process_index()
    host = zlib.crc32(socket.gethostname().encode()) & 0x7FFFFFFF
    hosts = np.asarray(multihost_utils.process_allgather(np.array([host], np.int32))).reshape(-1)
    return int(np.flatnonzero(hosts == host)[0])


def barrier() -> None:
    """Return once every process got here (a no-op with one process)."""
    any_process(False)


def process_local(tree: Any) -> Any:
    """A pytree of arrays replicated over every process's devices -> this process's copy on its first device
    (computations on it then involve this process alone, e.g. each process validating the EMA weights)."""
    if not is_multi_process():
        return tree
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)
