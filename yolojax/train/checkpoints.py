"""Orbax checkpoints of the whole training state, and export of the EMA weights.

Layout of a run directory:
  weights/ckpt_last/<iteration>/   the latest checkpoints (the two newest kept), items "state" + "meta"
  weights/ckpt_best/<iteration>/   the checkpoint of the best fitness so far
  weights/last/, weights/best/     EMA weights through yolojax.models.weights.save_weights (for val / predict)
"state" is the TrainState (params, EMA, optimizer state, counters, RNG key) as a pytree; "meta" is JSON (epoch,
best fitness, data iterator state, config). Orbax writes each checkpoint into a temporary directory and renames it
when complete, so a save killed midway leaves the previous checkpoint the latest one.

Resuming (`restore_latest`) takes the newest checkpoint that reads back whole: a damaged one (truncated files, a
folder without its items) is named in a warning, set aside as `<step>.damaged`, and the previous one is tried;
`latest_resumable_run` picks, across runs, the newest with a complete checkpoint. Saving a step that already exists
(a set-aside step recomputed, a run restarted with exist_ok) replaces it.

A run of several processes writes one checkpoint: every process calls `save_checkpoint` (orbax's saves are
collective: they meet at barriers through jax.distributed) with the same replicated state, copied to host numpy;
orbax writes numpy arrays and the JSON meta from process 0 alone (its NumpyHandler, JsonCheckpointHandler). Every
process calls `restore_checkpoint` and reads the files, so the run directory must be on a filesystem they share.
`export_ema_weights` is process 0's alone.
"""
from __future__ import annotations

import base64
import csv
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from yolojax.models.weights import save_weights
from yolojax.train.config import ConfigError
from yolojax.train.distributed import process_local

# how the state's arrays are laid out (meta "state_format"); a checkpoint of another layout cannot resume here
STATE_FORMAT = "flat"
# the files of a step folder that orbax writes last; a folder without them is not a complete checkpoint
STEP_FILES = ("_CHECKPOINT_METADATA", "meta/metadata", "state/_METADATA", "state/manifest.ocdbt")
# settings a resumed run may change: how it runs, not what it computes
RESUME_MAY_CHANGE = ("resume", "workers", "cache", "plots", "tensorboard")
# what a run leaves in its folder (replaced when exist_ok reuses the folder for a new run)
RUN_OUTPUTS = ("weights", "tensorboard", "args.yaml", "*.csv", "*.png", "*.jpg")


class ResumeError(ConfigError):
    """A run that cannot be resumed: no complete checkpoint, already finished, or settings changed on resume."""


class StateFormatError(ResumeError):
    """A checkpoint whose training state another yolojax version laid out differently."""


class CheckpointWarning(UserWarning):
    """A checkpoint skipped on resume (damaged, partial or stray), and why."""


def warn(message: str) -> None:
    warnings.warn(message, CheckpointWarning, stacklevel=2)


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
    meta = {**meta, "data_state": encode_data_state(meta.get("data_state")), "state_format": STATE_FORMAT}
    if step in manager.all_steps():  # a step recomputed after a fall-back, or a reused run folder: the new one wins
        manager.delete(step)
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state_dict),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
    return step


def restore_checkpoint(manager: ocp.CheckpointManager, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """(state shaped like `template`, meta) of `step` (default: the latest complete checkpoint).

    Raises FileNotFoundError naming the directory when it holds no complete checkpoint, and StateFormatError when
    the checkpoint's state has another layout.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{manager.directory}: no complete checkpoint to restore")
    saved_format = _read_meta(manager, step).get("state_format", "per leaf")
    if saved_format != STATE_FORMAT:
        raise StateFormatError(
            f"{Path(manager.directory) / str(step)}: the training state was saved {saved_format!r} by another yolojax "
            f"version, and this one keeps it {STATE_FORMAT!r}; it cannot be resumed. The run's exported EMA weights "
            f"(weights/last, weights/best) still load: pass that folder as weights= to train from them")
    target = jax.tree.map(np.asarray, serialization.to_state_dict(jax.device_get(template)))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    state = serialization.from_state_dict(template, jax.tree.map(np.asarray, restored["state"]))
    meta = dict(restored["meta"])
    meta["data_state"] = decode_data_state(meta.get("data_state"))
    return state, meta


def step_problem(step_dir: Path) -> str | None:
    """Why `step_dir` is not a complete checkpoint (a file orbax writes is missing or its metadata unreadable), or
    None when it looks complete (its arrays are checked only by reading them back)."""
    missing = [name for name in STEP_FILES if not (step_dir / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        json.loads((step_dir / STEP_FILES[0]).read_text())
    except (OSError, ValueError) as err:
        return f"unreadable {STEP_FILES[0]} ({err})"
    return None


def _step_dirs(directory: Path) -> dict[int, Path]:
    return {int(p.name): p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()} \
        if directory.is_dir() else {}


def complete_steps(directory: str | Path) -> list[int]:
    """Steps of a checkpoint directory whose folders look complete (`step_problem`), ascending."""
    return sorted(step for step, path in _step_dirs(Path(directory)).items() if step_problem(path) is None)


def _set_aside(step_dir: Path) -> Path:
    """Rename a damaged step folder to `<step>.damaged` (`.damaged2`, ...) so that orbax ignores it."""
    target, n = step_dir.with_name(f"{step_dir.name}.damaged"), 2
    while target.exists():
        target, n = step_dir.with_name(f"{step_dir.name}.damaged{n}"), n + 1
    step_dir.rename(target)
    return target


def restore_latest(manager: ocp.CheckpointManager, template: Any,
                   warn: Callable[[str], None] = warn) -> tuple[Any, dict, int]:
    """(state, meta, step) of the newest checkpoint that reads back whole. Each newer step folder that does not (a
    partial or truncated write, a stray folder) is named through `warn` with the reason and set aside (process 0
    renames it `<step>.damaged`), so that later saves of that step do not collide with it.

    Raises ResumeError naming the directory when no step restores.
    """
    directory = Path(manager.directory)
    for partial in sorted(p.name for p in directory.iterdir() if "tmp" in p.name):
        warn(f"{directory / partial}: an unfinished checkpoint write; ignored")
    for step, step_dir in sorted(_step_dirs(directory).items(), reverse=True):
        problem = step_problem(step_dir)
        if problem is None:
            try:
                state, meta = restore_checkpoint(manager, template, step)
                return state, meta, step
            except StateFormatError:
                raise  # not damaged: nothing to set aside
            except (ValueError, KeyError, OSError, RuntimeError) as err:
                problem = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        warn(f"checkpoint step {step} in {directory} is damaged ({problem}); falling back to the previous step")
        if jax.process_index() == 0:
            _set_aside(step_dir)
        manager.reload()
    raise ResumeError(f"{directory}: no complete checkpoint to resume from")


def read_meta(directory: str | Path, step: int) -> dict:
    """The JSON meta of checkpoint `step` in `directory`, without reading the state."""
    return _read_meta(open_manager(directory), step)


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def latest_resumable_run(project: str | Path, say: Callable[[str], None] = print) -> Path:
    """The run folder under `project` whose newest complete checkpoint (weights/ckpt_last) was written last; `say`
    names it and the newer runs skipped for having none (stopped before their first checkpoint). ResumeError when
    there is none."""
    runs = sorted((p for p in Path(project).glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    best, best_time, skipped = None, -1.0, []
    for run in runs:
        steps = complete_steps(run / "weights" / "ckpt_last")
        if not steps:
            skipped.append(run)
            continue
        written = (run / "weights" / "ckpt_last" / str(steps[-1])).stat().st_mtime
        if written > best_time:
            best, best_time = run, written
    if best is None:
        raise ResumeError(f"resume=True: no run with a complete checkpoint under {Path(project).absolute()} "
                          "(start a new run, or resume=RUN_DIR)")
    newer = [run.name for run in skipped if run.stat().st_mtime > best_time]
    note = f" (skipped newer runs without a complete checkpoint: {', '.join(newer)})" if newer else ""
    say(f"resume=True: resuming {best.absolute()}, the newest run with a complete checkpoint{note}")
    return best.absolute()


def resumed_config(given: dict, saved: dict, baseline: dict, run_dir: Path) -> dict:
    """The run's saved config, with the settings of RESUME_MAY_CHANGE taken from `given`.

    A setting that `given` changes (it differs both from `baseline`, what the command line gives without keys, and
    from `saved`) and that is not in RESUME_MAY_CHANGE raises ResumeError naming it: a resumed run keeps its plan,
    as the reference's does.
    """
    changed = [k for k in given if k in saved and given[k] != saved[k] and given[k] != baseline.get(k)]
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    if refused:
        shown = ", ".join(f"{k}={given[k]} (saved {saved[k]})" for k in refused)
        hint = (f"; to train longer, start a new run from its weights: yolojax train weights={run_dir}/weights/last "
                f"epochs={given['epochs']}") if "epochs" in refused else ""
        raise ResumeError(f"resume={run_dir}: {shown} cannot change on resume (a resumed run keeps its saved "
                          f"settings; only {', '.join(RESUME_MAY_CHANGE[1:])} may){hint}")
    return {**saved, **{k: given[k] for k in changed}, "resume": given.get("resume")}


def check_unfinished(run_dir: Path, epochs: int) -> None:
    """ResumeError when the run's newest complete checkpoint says it finished (all `epochs` done, or stopped early
    on patience / the time budget)."""
    steps = complete_steps(run_dir / "weights" / "ckpt_last")
    if not steps:
        raise ResumeError(f"resume={run_dir}: no complete checkpoint in {run_dir / 'weights' / 'ckpt_last'}")
    meta = read_meta(run_dir / "weights" / "ckpt_last", steps[-1])
    done = meta.get("finished") or (f"all {epochs} epochs done" if int(meta.get("epoch", 0)) >= epochs else None)
    if done:
        raise ResumeError(f"resume={run_dir}: the run is finished ({done}); nothing to resume. To train longer, "
                          f"start a new run from its weights: yolojax train weights={run_dir}/weights/last")


def clear_previous_run(run_dir: Path) -> list[str]:
    """Remove what an earlier run left in `run_dir` (RUN_OUTPUTS), for a new run reusing the folder (exist_ok).
    Returns the names removed."""
    removed = sorted({path for pattern in RUN_OUTPUTS for path in run_dir.glob(pattern)})
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return [path.name for path in removed]


def drop_results_after(csv_path: Path, epochs_done: int) -> int:
    """Remove the rows of results.csv for epochs after `epochs_done` (written before a crash that lost their
    checkpoint), so that the resumed epochs do not repeat them. Returns how many were removed."""
    if not csv_path.is_file():
        return 0
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if int(float(row["epoch"])) <= epochs_done]
    if len(kept) < len(rows):
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
    return len(rows) - len(kept)


def require_run_folder(run_dir: Path, given: Any) -> None:
    """ResumeError unless `run_dir` is a run folder (holds its args.yaml)."""
    if not (run_dir / "args.yaml").is_file():
        what = "does not exist" if not run_dir.exists() else "is not a run folder (no args.yaml)"
        raise ResumeError(f"resume={given}: {run_dir} {what}; give a run folder such as runs/train, or resume=True")


def host_ema_variables(state: Any) -> dict:
    """A TrainState's EMA variables as host numpy arrays, from this process's copy: no collective, so process 0 may
    call it alone. Only the EMA's two buffers are copied, not the whole state."""
    ema = jax.device_get(process_local(state.ema))
    return state.layout.variables(ema["params"], ema["model_state"])


def export_ema_weights(path: str | Path, ema_variables: dict, meta: dict) -> Path:
    """Write EMA variables with yolojax.models.weights.save_weights (what val / predict load); process 0 only.

    meta: at least model, scale, num_classes (see yolojax.models.weights). Returns the written directory.
    """
    if jax.process_index() != 0:
        raise RuntimeError(f"export_ema_weights runs on process 0 alone (called on process {jax.process_index()})")
    return Path(save_weights(path, jax.device_get(ema_variables), meta))
