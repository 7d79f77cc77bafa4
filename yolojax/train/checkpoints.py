"""Orbax checkpoints of the whole training state, and export of the EMA weights.

Layout of a run directory:
  weights/ckpt_last/<iteration>/   the latest checkpoints (the two newest kept), items "state" + "meta"
  weights/ckpt_best/<iteration>/   the checkpoint of the best fitness so far
  weights/last/, weights/best/     EMA weights through yolojax.models.weights.save_weights (for val / predict)
"state" is the TrainState (params, EMA, optimizer state, counters, RNG key) as a pytree; "meta" is JSON (epoch,
best fitness, data iterator state, config). Orbax writes each checkpoint into a temporary directory and renames it
when complete, so a save killed midway leaves the previous checkpoint the latest one.

A run of several processes writes one checkpoint: every process calls `save_checkpoint` (orbax's saves are
collective: they meet at barriers through jax.distributed) with the same replicated state, copied to host numpy;
orbax writes numpy arrays and the JSON meta from process 0 alone (its NumpyHandler, JsonCheckpointHandler). Every
process calls `restore_checkpoint` and reads the files, so the run directory must be on a filesystem they share.
`export_ema_weights` is process 0's alone.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from yolojax.models.weights import save_weights


def open_manager(directory: str | Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A synchronous CheckpointManager for `directory` (created if missing) with items "state" and "meta"."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=("state", "meta"))


def encode_data_state(data_state: Any) -> Any:
    """Iterator state (JSON-able, or bytes) -> a JSON-able value."""
    if isinstance(data_state, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(data_state)).decode()}
    json.dumps(data_state)  # raises TypeError early, naming the value, if the iterator state is not JSON-able
    return data_state


def decode_data_state(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__bytes__"}:
        return base64.b64decode(value["__bytes__"])
    return value


def save_checkpoint(manager: ocp.CheckpointManager, state: Any, meta: dict, step: int | None = None) -> int:
    """Save `state` (a pytree / flax struct) and JSON `meta` under `step` (default: state.iteration); returns it."""
    step = int(jax.device_get(state.iteration)) if step is None else int(step)
    state_dict = jax.device_get(serialization.to_state_dict(state))
    meta = {**meta, "data_state": encode_data_state(meta.get("data_state"))}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state_dict),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
    return step


def restore_checkpoint(manager: ocp.CheckpointManager, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """(state shaped like `template`, meta) of `step` (default: the latest complete checkpoint).

    Raises FileNotFoundError naming the directory when it holds no complete checkpoint.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{manager.directory}: no complete checkpoint to restore")
    target = jax.tree.map(np.asarray, serialization.to_state_dict(jax.device_get(template)))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    state = serialization.from_state_dict(template, jax.tree.map(np.asarray, restored["state"]))
    meta = dict(restored["meta"])
    meta["data_state"] = decode_data_state(meta.get("data_state"))
    return state, meta


def export_ema_weights(path: str | Path, ema_variables: dict, meta: dict) -> Path:
    """Write EMA variables with yolojax.models.weights.save_weights (what val / predict load); process 0 only.

    meta: at least model, scale, num_classes (see yolojax.models.weights). Returns the written directory.
    """
    if jax.process_index() != 0:
        raise RuntimeError(f"export_ema_weights runs on process 0 alone (called on process {jax.process_index()})")
    return Path(save_weights(path, jax.device_get(ema_variables), meta))
