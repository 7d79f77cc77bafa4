"""Resume and run-folder reuse: the newest checkpoint that reads back whole, across runs and inside a run; exist_ok;
settings that may not change on resume; finished runs; a SIGKILL plus a truncated checkpoint."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from toy import ToyData, ToyTask, toy_evaluate

from yolojax.models.weights import save_weights
from yolojax.train import checkpoints as ckpt
from yolojax.train.config import load_config
from yolojax.train.loop import train
from yolojax.train.optim import plan_optimizer
from yolojax.train.setup import initial_state

REPO = str(Path(__file__).resolve().parents[2])


def _toy_state(seed=0, shift=0.0):
    cfg = load_config(["cfg=none", "optimizer=SGD"])
    plan = plan_optimizer(cfg, num_classes=1, dataset_size=64, batches_per_epoch=4)
    state = initial_state(ToyTask(), plan, (16, 16), seed=seed)[0]
    return state.replace(params=jax.tree.map(lambda x: x + shift, state.params))


def _truncate(step_dir: Path) -> None:
    for path in step_dir.rglob("*"):
        if path.is_file():
            os.truncate(path, path.stat().st_size // 2)


def _assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _three_steps(directory):
    manager = ckpt.open_manager(directory, max_to_keep=3)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(manager, _toy_state(shift=step), {"epoch": step}, step=step)
    return manager


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_step_with_a_warning(tmp_path):
    _three_steps(tmp_path)
    _truncate(tmp_path / "3")
    (tmp_path / "7").mkdir()  # a stray step folder
    warnings = []
    state, meta, step = ckpt.restore_latest(ckpt.open_manager(tmp_path), _toy_state(seed=4), warn=warnings.append)
    assert (step, meta["epoch"]) == (2, 2)
    _assert_same_state(state, _toy_state(shift=2))
    assert len(warnings) == 2 and "step 7" in warnings[0] and "missing" in warnings[0]
    assert "step 3" in warnings[1] and "damaged" in warnings[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "3.damaged", "7.damaged"]


def test_saving_a_step_that_exists_replaces_it(tmp_path):
    manager = _three_steps(tmp_path)
    ckpt.save_checkpoint(manager, _toy_state(shift=9), {"epoch": 9}, step=2)
    state, meta = ckpt.restore_checkpoint(ckpt.open_manager(tmp_path), _toy_state(), step=2)
    assert meta["epoch"] == 9
    _assert_same_state(state, _toy_state(shift=9))


def test_no_complete_checkpoint_is_a_resume_error(tmp_path):
    (tmp_path / "5").mkdir()
    with pytest.raises(ckpt.ResumeError, match="no complete checkpoint"):
        ckpt.restore_latest(ckpt.open_manager(tmp_path), _toy_state(), warn=lambda _: None)


def test_resume_true_picks_the_newest_run_with_a_complete_checkpoint(tmp_path):
    _three_steps(tmp_path / "train" / "weights" / "ckpt_last")
    (tmp_path / "train2" / "weights" / "ckpt_last" / "4").mkdir(parents=True)  # killed before its first checkpoint
    said = []
    assert ckpt.latest_resumable_run(tmp_path, say=said.append) == (tmp_path / "train").absolute()
    assert "train2" in said[0] and str(tmp_path / "train") in said[0]
    with pytest.raises(ckpt.ResumeError, match="no run with a complete checkpoint"):
        ckpt.latest_resumable_run(tmp_path / "train2")


def test_resume_keeps_the_saved_plan_and_names_a_changed_key():
    saved, baseline = load_config(["cfg=none", "epochs=3"]), load_config(["cfg=none"])
    given = load_config(["cfg=none", "epochs=5", "workers=2", "resume=runs/x"])
    with pytest.raises(ckpt.ResumeError, match=r"epochs=5 \(saved 3\) cannot change on resume.*epochs=5"):
        ckpt.resumed_config(given, saved, baseline, Path("runs/x"))
    allowed = ckpt.resumed_config(load_config(["cfg=none", "workers=2", "resume=runs/x"]), saved, baseline,
                                  Path("runs/x"))
    assert (allowed["epochs"], allowed["workers"], allowed["resume"]) == (3, 2, "runs/x")


def _cfg(tmp_path, *extra):
    return load_config(["cfg=none", "optimizer=SGD", "batch=8", "imgsz=32", "nbs=8", "workers=0", "plots=False",
                        f"project={tmp_path}", "warmup_epochs=0", *extra])


def _toy_train(cfg):
    return train(cfg, task=ToyTask(), data=ToyData(batches_per_epoch=2), evaluate=toy_evaluate, progress=False)


def test_exist_ok_reuses_the_folder_for_a_new_run_and_a_finished_run_refuses_resume(tmp_path, capsys):
    first = _toy_train(_cfg(tmp_path, "epochs=3"))
    second = _toy_train(_cfg(tmp_path, "epochs=2", "exist_ok=True"))
    assert second.run_dir == first.run_dir and second.iterations == 4
    assert "held an earlier run" in capsys.readouterr().out
    rows = (second.run_dir / "results.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]
    assert ckpt.complete_steps(second.run_dir / "weights" / "ckpt_last") == [2, 4]
    with pytest.raises(ckpt.ResumeError, match="the run is finished \\(all 2 epochs done\\)"):
        _toy_train(_cfg(tmp_path, f"resume={second.run_dir}"))


_KILL_AFTER_SAVE = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {repo!r} + "/tests"]
    from yolojax.models.weights import save_weights
from yolojax.train import checkpoints as ckpt
    import toy
    save = ckpt.save_checkpoint
    def save_then_die(manager, state, meta, step=None):
        step = save(manager, state, meta, step)
        if step == {kill_at} and "ckpt_last" in str(manager.directory):
            os.kill(os.getpid(), signal.SIGKILL)  # killed right after the checkpoint was written
        return step
    ckpt.save_checkpoint = save_then_die
    toy.run_toy(sys.argv[1:])
""")


def _run(code_or_script, *args, cache_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    command = [sys.executable, "-c", code_or_script] if "\n" in code_or_script else [sys.executable, code_or_script]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_sigkill_then_a_truncated_checkpoint_resumes_from_the_previous_step_to_the_same_weights(tmp_path):
    """3 epochs x 4 batches: killed right after the epoch-2 checkpoint (step 8), whose files are then cut in half;
    the resumed run restarts at step 4 and ends with the uninterrupted run's state, bit for bit. Three processes
    (about 30 s); the fast variant is test_a_truncated_latest_checkpoint_falls_back_to_the_previous_step_..."""
    common = ["epochs=3", f"project={tmp_path}", "plots=False"]
    toy_script = str(Path(REPO) / "tests" / "toy.py")
    straight = _run(toy_script, *common, "name=straight", cache_dir=tmp_path / "jax")
    assert "ITERATIONS 12" in straight.stdout, straight.stderr[-2000:]
    killed = _run(_KILL_AFTER_SAVE.format(repo=REPO, kill_at=8), *common, "name=fault", cache_dir=tmp_path / "jax")
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = tmp_path / "fault" / "weights" / "ckpt_last"
    assert ckpt.complete_steps(last) == [4, 8]
    _truncate(last / "8")
    resumed = _run(toy_script, f"resume={tmp_path / 'fault'}", cache_dir=tmp_path / "jax")
    assert "ITERATIONS 12 INTERRUPTED False" in resumed.stdout, resumed.stderr[-2000:]
    assert "checkpoint step 8" in resumed.stderr and "falling back" in resumed.stderr
    assert "Resuming" in resumed.stdout and "at epoch 2, batch 0" in resumed.stdout
    final = [ckpt.restore_checkpoint(ckpt.open_manager(tmp_path / name / "weights" / "ckpt_last"), _toy_state())
             for name in ("straight", "fault")]
    assert int(final[1][0].iteration) == 12 and final[1][1]["epoch"] == 3
    _assert_same_state(final[0][0], final[1][0])
    epochs = [row.split(",")[0] for row in (tmp_path / "fault" / "results.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


def test_a_resumed_run_does_not_read_its_initial_weights_again(tmp_path):
    start = ToyTask().init(jax.random.key(1), (32, 32))
    weights = save_weights(tmp_path / "start", start, {"imgsz": 32, "scale": "toy", "num_classes": 1})
    cfg = _cfg(tmp_path, "epochs=2", f"weights={weights}")
    stopped = train(cfg, task=ToyTask(), data=ToyData(batches_per_epoch=2), evaluate=toy_evaluate, progress=False,
                    stop_at_iteration=1)
    shutil.rmtree(weights)  # the checkpoint holds every tensor: the run resumes without them
    resumed = _toy_train(_cfg(tmp_path, "epochs=2", f"weights={weights}", f"resume={stopped.run_dir}"))
    assert resumed.run_dir == stopped.run_dir and resumed.iterations == 4
