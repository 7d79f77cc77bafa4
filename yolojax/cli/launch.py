"""`yolojax train processes=...`: one machine's training run as several processes, one per GPU (or group of GPUs).

One process driving every GPU also launches every GPU's kernels from one host thread; a process per GPU spreads
that work over the host's cores (docs/distributed.md). With `processes=auto` (the default) and two or more GPUs
selected, `yolojax train` starts itself once per GPU as a jax.distributed job on 127.0.0.1 and waits for the
processes; the run is the same one (global `batch`, one run directory, checkpoints written by process 0).

The parent never starts JAX's backends. Its children run in their own process group: the parent passes on each
SIGINT (Ctrl-C: the first asks for a checkpoint and a stop, the second aborts) and SIGTERM exactly once, and if a
child fails the others get `FAILURE_GRACE_S` to stop by themselves (the collectives they wait in fail or time out)
before they are terminated, so the launcher never hangs on a dead job.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from yolojax.train.config import ConfigError, parse_device

FAILURE_GRACE_S = 30.0
TERMINATE_GRACE_S = 10.0
POLL_S = 0.2
LAUNCHER_VARIABLE = "YOLOJAX_LAUNCHER_PID"
INTERRUPTED = 130  # `yolojax train`'s exit status after Ctrl-C


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ids of the GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or `nvidia-smi -L` counts
    them when it is unset); [] on a machine without NVIDIA GPUs."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        return [] if ids[:1] in ([], ["-1"], ["NoDevFiles"]) else ids
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def children_of(cfg: Any, environ: Mapping[str, str] = os.environ) -> list[dict[str, str]]:
    """`plan` for a train config (its `processes` and `device`), looking for GPUs only when it may launch."""
    processes, platform = cfg.get("processes", 1), parse_device(cfg.get("device"))
    if processes == 1:
        return []
    children = plan(processes, cfg.get("device"), [] if platform in ("cpu", "tpu") else visible_gpus(environ))
    # each process checks this too, but one line here beats one per process
    units = sum(len(env["CUDA_VISIBLE_DEVICES"].split(",")) if "CUDA_VISIBLE_DEVICES" in env else 1
                for env in children)
    if children and cfg.batch % units:
        what = "processes" if platform == "cpu" else "GPUs"
        raise ConfigError(f"batch={cfg.batch} does not split over {units} {what}; choose a multiple of {units}")
    return children


def plan(processes: Any, device: Any, gpus: Sequence[str]) -> list[dict[str, str]]:
    """The children to start: one dict of environment variables per process ([] means: train in this process).

    processes: "auto" (one per selected GPU when there are two or more) or a count; a count above 1 must divide the
      selected GPUs (each process gets a contiguous group), or with device=cpu gives each process the CPU.
    device: the config's `device` (ids are positions among `gpus`).
    gpus: visible_gpus().
    """
    parsed = parse_device(device)
    if parsed in ("cpu", "tpu") or (parsed is None and not gpus):
        selected: list[str] = []
    elif isinstance(parsed, tuple):
        wrong = [i for i in parsed if i >= len(gpus)]
        if wrong:
            raise ConfigError(f"device={device}: no GPU {wrong[0]}; this machine shows {len(gpus)} "
                              f"(ids 0..{len(gpus) - 1})")
        selected = [gpus[i] for i in parsed]
    else:
        selected = list(gpus)
    count = len(selected) if processes == "auto" else int(processes)
    if count <= 1:
        return []
    if parsed == "tpu":
        raise ConfigError(f"processes={processes} with device=tpu: start one process per TPU host instead "
                          "(docs/distributed.md)")
    if parsed != "cpu":
        if not selected:
            raise ConfigError(f"processes={processes}: no GPU here to give each process (use device=cpu to run "
                              "several CPU processes)")
        if len(selected) % count:
            raise ConfigError(f"processes={processes} does not divide the {len(selected)} selected GPUs")
    port = free_port()
    children = []
    for index in range(count):
        env = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(count),
               "JAX_PROCESS_ID": str(index)}
        if selected:
            share = len(selected) // count
            env["CUDA_VISIBLE_DEVICES"] = ",".join(selected[index * share:(index + 1) * share])
        children.append(env)
    return children


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_arguments(argv: Sequence[str], device: Any, workers: int, count: int, cores: int | None) -> list[str]:
    """The command line of each child: the parent's, then `processes=1` (a child never launches), its device
    (`device=` for its own GPUs, `device=cpu` kept) and `workers` capped at the host's cores / processes, as the
    reference caps its per-rank loader workers under DDP."""
    extra = ["processes=1", "device=cpu" if parse_device(device) == "cpu" else "device="]
    per_process = max(1, (cores or 1) // count)
    if workers > per_process:
        extra.append(f"workers={per_process}")
    return [*argv, *extra]


def run_children(command: Sequence[str], environments: Sequence[Mapping[str, str]], *,
                 failure_grace_s: float = FAILURE_GRACE_S) -> int:
    """Start `command` once per environment (added to this one), pass on SIGINT and SIGTERM, wait for all.

    Returns 0 when every child succeeded, else the first failure's exit status (a child killed by signal N: 128 + N).
    After a failure the others get `failure_grace_s` to exit, then SIGTERM, then SIGKILL.
    """
    launcher = {LAUNCHER_VARIABLE: str(os.getpid())}
    own_group = {"process_group": 0} if os.name == "posix" else {}  # Ctrl-C reaches the launcher alone
    children = [subprocess.Popen(list(command), env={**os.environ, **env, **launcher}, **own_group)
                for env in environments]
    previous = {sig: signal.signal(sig, _forward_to(children)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _wait(children, failure_grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _forward_to(children):
    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
    return forward


def stop_with_launcher(environ: Mapping[str, str] = os.environ) -> None:
    """In a launched child, first thing: ask Linux for SIGTERM when the launcher dies (PR_SET_PDEATHSIG), and exit
    if it is gone already, so that no child trains on orphaned. (Asked here rather than between fork and exec,
    which is unsafe in a process that has started JAX's threads.)"""
    launcher = environ.get(LAUNCHER_VARIABLE)
    if not launcher or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(launcher):
        raise SystemExit("yolojax train: the launching process is gone; stopping")


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def _wait(children: list[subprocess.Popen], failure_grace_s: float) -> int:
    failed_at, first_failure = None, 0
    while True:
        codes = [child.poll() for child in children]
        failure = next((_status(c) for c in codes if c not in (None, 0)), 0)
        if all(code is not None for code in codes):
            return first_failure or failure
        if failure and failed_at is None:
            failed_at, first_failure = time.monotonic(), failure
            if failure != INTERRUPTED:  # after Ctrl-C every process stops with a checkpoint by itself
                print(f"yolojax train: a process exited with status {failure}; stopping the others "
                      f"(at most {failure_grace_s:.0f} s)", file=sys.stderr, flush=True)
        if failed_at is not None and time.monotonic() - failed_at > failure_grace_s:
            _terminate([c for c in children if c.poll() is None])
            return first_failure
        time.sleep(POLL_S)


def _terminate(children: list[subprocess.Popen]) -> None:
    for child in children:
        child.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
