"""Orbax checkpoints: exact round trip, a killed save, bitwise resume of the real loop in a new process."""
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import serialization
from toy import ToyTask

from yolojax.train import checkpoints as ckpt
from yolojax.train.config import load_config
from yolojax.train.optim import plan_optimizer
from yolojax.train.setup import initial_state

REPO = str(Path(__file__).resolve().parents[2])
TOY = Path(__file__).resolve().parents[1] / "toy.py"


def _toy_state(seed=0):
    task = ToyTask()
    cfg = load_config(["cfg=none", "optimizer=SGD"])
    plan = plan_optimizer(cfg, num_classes=1, dataset_size=64, batches_per_epoch=4)
    return initial_state(task, plan, (16, 16), seed=seed)[0]


def test_round_trip_is_bitwise_with_meta_and_bytes_iterator_state(tmp_path):
    state = _toy_state()
    state = state.replace(params=jax.tree.map(lambda x: x + 0.123, state.params), iteration=state.iteration + 7)
    manager = ckpt.open_manager(tmp_path / "ckpt")
    step = ckpt.save_checkpoint(manager, state, {"epoch": 3, "batch": 2, "data_state": b"\x00grain\xff"})
    assert step == 7
    restored, meta = ckpt.restore_checkpoint(ckpt.open_manager(tmp_path / "ckpt"), _toy_state(seed=5))
    assert (meta["epoch"], meta["batch"], meta["data_state"]) == (3, 2, b"\x00grain\xff")
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_of_another_state_layout_is_a_clear_resume_error_and_is_kept(tmp_path):
    """A checkpoint without this version's state format (an earlier yolojax saved the state per leaf) is named in
    the error, with where the run's weights are; it is not set aside as damaged."""
    manager = ckpt.open_manager(tmp_path / "ckpt")
    state_dict = jax.device_get(serialization.to_state_dict(_toy_state()))
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state_dict),
                                            meta=ocp.args.JsonSave({"epoch": 1})))
    manager.wait_until_finished()
    with pytest.raises(ckpt.StateFormatError, match=r"ckpt/3: the training state was saved 'per leaf'.*weights="):
        ckpt.restore_latest(ckpt.open_manager(tmp_path / "ckpt"), _toy_state())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["3"]


_KILLED_SAVE = textwrap.dedent("""
    import sys, jax, numpy as np
    sys.path[:0] = [{repo!r}, {repo!r} + "/tests", {repo!r} + "/tests/train"]
    from yolojax.train import checkpoints as ckpt
    from test_checkpoint import _toy_state
    manager = ckpt.open_manager({directory!r})
    state = _toy_state()
    ckpt.save_checkpoint(manager, state, {{"epoch": 1}}, step=1)
    print("SAVED1", flush=True)
    big = state.replace(params=np.ones(60_000_000, np.float32))
    ckpt.save_checkpoint(manager, big, {{"epoch": 2}}, step=2)
    print("SAVED2", flush=True)
""")


def test_killed_save_leaves_the_previous_checkpoint_usable(tmp_path):
    directory = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE.format(repo=REPO, directory=str(directory))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.stdout.readline().strip() == "SAVED1", proc.stderr.read()[-2000:]
    deadline, partial = time.time() + 60, []
    while time.time() < deadline and not partial:  # wait until the second save has started writing
        partial = [p for p in directory.iterdir() if "tmp" in p.name]
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert partial, "the second save never started"
    assert not (directory / "2").exists(), "the save finished before the kill; the test proved nothing"
    manager = ckpt.open_manager(directory)
    assert manager.latest_step() == 1
    restored, meta = ckpt.restore_checkpoint(manager, _toy_state(seed=9))
    assert meta["epoch"] == 1
    for a, b in zip(jax.tree.leaves(_toy_state()), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _run_toy(*args, cache_dir):
    """The real loop on the toy task in a fresh process; compiled programs shared through a persistent cache."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    proc = subprocess.run([sys.executable, str(TOY), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _final_state(run_dir):
    return ckpt.restore_checkpoint(ckpt.open_manager(Path(run_dir) / "weights" / "ckpt_last"), _toy_state())


def test_resume_in_a_new_process_is_bitwise_identical_to_a_straight_run(tmp_path):
    """3 epochs x 4 batches (12 iterations, accumulation 2 under warmup): straight vs stop at iteration 6 (mid
    epoch 2) + resume in a new process."""
    common = ["epochs=3", f"project={tmp_path}", "exist_ok=True"]
    run = lambda *args: _run_toy(*common, *args, cache_dir=tmp_path / "jax_cache")  # noqa: E731
    assert "ITERATIONS 12" in run("name=straight")
    assert "ITERATIONS 6 INTERRUPTED True" in run("name=split", "stop_at=6")
    half, half_meta = _final_state(tmp_path / "split")
    assert (half_meta["epoch"], half_meta["batch"], int(half.iteration)) == (1, 2, 6)
    assert "ITERATIONS 12 INTERRUPTED False" in run(f"resume={tmp_path / 'split'}")
    straight, _ = _final_state(tmp_path / "straight")
    resumed, meta = _final_state(tmp_path / "split")
    assert meta["epoch"] == 3 and int(resumed.ema_updates) == int(straight.ema_updates) > 0
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(jax.tree.leaves(half.params)[0]),
                              np.asarray(jax.tree.leaves(resumed.params)[0]))
    # the interrupted epoch's train losses average all its batches, those before the stop included
    assert half_meta["epoch_losses"]["count"] == 2
    assert _train_losses(tmp_path / "split") == _train_losses(tmp_path / "straight")


def _train_losses(run_dir) -> list[list[str]]:
    rows = list(csv.DictReader((Path(run_dir) / "results.csv").open()))
    return [[value for key, value in row.items() if key.startswith("train/")] for row in rows]
