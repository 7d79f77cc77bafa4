"""The train loop end to end on the toy task: Ctrl-C, non-finite losses, CLI errors, run-directory outputs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy import ToyData, ToyTask, toy_evaluate

from yolojax.cli.train import cli_main
from yolojax.train import checkpoints as ckpt
from yolojax.train.config import load_config
from yolojax.train.loop import NonFiniteLossError, train

REPO = str(Path(__file__).resolve().parents[2])
TOY = Path(__file__).resolve().parents[1] / "toy.py"


def _cfg(tmp_path, *extra):
    return load_config(["cfg=none", "optimizer=SGD", "batch=8", "imgsz=32", "nbs=8", "workers=0",
                        f"project={tmp_path}", "warmup_epochs=0", *extra])


def test_run_directory_holds_results_plot_and_checkpoints(tmp_path):
    result = train(_cfg(tmp_path, "epochs=2"), task=ToyTask(), data=ToyData(), evaluate=toy_evaluate,
                   progress=False)
    rows = (result.run_dir / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:3] == ["epoch", "train/box_loss", "train/size_loss"]  # the task's loss items, in its order
    assert {"val/loss", "fitness", "lr/pg0", "lr/pg1", "lr/pg2"} <= set(header)
    assert len(rows) == 3 and (result.run_dir / "results.png").stat().st_size > 0
    assert ckpt.open_manager(result.run_dir / "weights" / "ckpt_last").latest_step() == 8  # 2 epochs x 4
    assert (result.run_dir / "weights" / "last" / "meta.json").exists()
    assert result.epochs_done == 2 and result.iterations == 8


def test_epochs_freeze_garbage_and_the_run_unfreezes_it_at_the_end(tmp_path, monkeypatch):
    import gc

    frozen = []

    class Watching(ToyData):
        def train_epoch(self, *args, **kwargs):
            for batch in super().train_epoch(*args, **kwargs):
                frozen.append(gc.get_freeze_count())
                yield batch
    train(_cfg(tmp_path, "epochs=2", "save=False", "plots=False"), task=ToyTask(), data=Watching(),
          evaluate=toy_evaluate, progress=False)
    assert min(frozen) > 0  # collected and frozen before each epoch's batches are drawn
    assert gc.get_freeze_count() == 0


def test_consecutive_non_finite_losses_stop_with_an_error_naming_the_last_good_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "epochs=5", "nonfinite_patience=3", "plots=False")
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive non-finite losses.*ckpt_last/4"):
        train(cfg, task=ToyTask(), data=ToyData(nan_from_epoch=1), evaluate=toy_evaluate, progress=False)
    manager = ckpt.open_manager(tmp_path / "train" / "weights" / "ckpt_last")
    assert manager.all_steps() == [4]  # epoch 1's checkpoint, nothing written after the losses went bad


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen([sys.executable, str(TOY), "epochs=100000", f"project={tmp_path}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    line = proc.stdout.readline()
    assert line.startswith("Training toy"), line + proc.stderr.read()[-2000:]
    ckpt_dir = tmp_path / "train" / "weights" / "ckpt_last"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.isdigit() for p in ckpt_dir.glob("*")):
        time.sleep(0.1)  # first epoch done: training is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "Interrupted: checkpoint saved" in out and "INTERRUPTED True" in out
    iterations = int(out.split("ITERATIONS ")[1].split()[0])
    manager = ckpt.open_manager(ckpt_dir)
    assert manager.latest_step() == iterations > 4


def test_cli_rejects_an_unknown_key_with_a_suggestion(capsys):
    assert cli_main(["epoch=3"]) == 2
    assert "unknown key 'epoch'; did you mean 'epochs'?" in capsys.readouterr().err
