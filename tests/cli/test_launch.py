"""`yolojax train processes=...` (yolojax.cli.launch): which children a config asks for, their command lines, the
waiting parent (a failure stops the others, signals passed on once), and one real run of two CPU processes."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from yolojax.cli import launch
from yolojax.train.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def visible(cfg_processes, device, gpus):
    return [env.get("CUDA_VISIBLE_DEVICES") for env in launch.plan(cfg_processes, device, gpus)]


def test_auto_starts_one_process_per_selected_gpu():
    assert visible("auto", None, ["0", "1"]) == ["0", "1"]
    assert visible("auto", "1,3", ["0", "1", "2", "3"]) == ["1", "3"]
    assert visible("auto", None, ["GPU-a", "GPU-b", "GPU-c"]) == ["GPU-a", "GPU-b", "GPU-c"]


def test_one_gpu_no_gpu_or_one_process_trains_in_this_process():
    assert launch.plan("auto", None, ["0"]) == []
    assert launch.plan("auto", None, []) == []
    assert launch.plan("auto", "cpu", ["0", "1"]) == []
    assert launch.plan(1, None, ["0", "1"]) == []
    assert launch.plan("auto", "0", ["0", "1"]) == []


def test_a_count_splits_the_gpus_into_contiguous_groups():
    assert visible(2, None, ["0", "1", "2", "3"]) == ["0,1", "2,3"]
    with pytest.raises(ConfigError, match="processes=3 does not divide the 4 selected GPUs"):
        launch.plan(3, None, ["0", "1", "2", "3"])


def test_every_child_joins_the_same_coordinator_with_its_own_index():
    children = launch.plan("auto", None, ["0", "1", "2"])
    assert {env["JAX_COORDINATOR_ADDRESS"] for env in children} == {children[0]["JAX_COORDINATOR_ADDRESS"]}
    assert children[0]["JAX_COORDINATOR_ADDRESS"].startswith("127.0.0.1:")
    assert [env["JAX_PROCESS_ID"] for env in children] == ["0", "1", "2"]
    assert {env["JAX_NUM_PROCESSES"] for env in children} == {"3"}


def test_cpu_processes_and_mistakes():
    children = launch.plan(2, "cpu", [])
    assert len(children) == 2 and all("CUDA_VISIBLE_DEVICES" not in env for env in children)
    with pytest.raises(ConfigError, match="no GPU here"):
        launch.plan(2, None, [])
    with pytest.raises(ConfigError, match="device=5: no GPU 5; this machine shows 2"):
        launch.plan("auto", "5", ["0", "1"])
    with pytest.raises(ConfigError, match="one process per TPU host"):
        launch.plan(2, "tpu", [])
    with pytest.raises(ConfigError, match="one process per TPU host"):  # from a config too, not ignored
        launch.children_of(load_config(["device=tpu", "processes=2"]))
    assert launch.children_of(load_config(["device=tpu"])) == []


def test_visible_gpus_reads_cuda_visible_devices():
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_the_processes_key_is_checked():
    assert load_config(["processes=4"]).processes == 4
    for bad in ("processes=0", "processes=many"):
        with pytest.raises(ConfigError, match="processes"):
            load_config([bad])


def test_child_command_lines_never_launch_again_and_share_the_cores():
    argv = ["model=yolov8s", "device=0,1", "workers=8"]
    assert launch.child_arguments(argv, "0,1", 8, 2, 32) == [*argv, "processes=1", "device="]
    assert launch.child_arguments(argv, "0,1", 8, 2, 8)[-1] == "workers=4"
    assert launch.child_arguments(["device=cpu"], "cpu", 0, 2, 2)[-2:] == ["processes=1", "device=cpu"]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_failing_child_stops_the_others_and_sets_the_exit_status():
    # every child runs the same command; the environment decides which one fails
    code = ("import os, sys, time\n"
            "if os.environ['JAX_PROCESS_ID'] == '1': sys.exit(3)\n"
            "time.sleep(600)")
    start = time.monotonic()
    status = launch.run_children(python(code), [{"JAX_PROCESS_ID": "0"}, {"JAX_PROCESS_ID": "1"}],
                                 failure_grace_s=1.0)
    assert status == 3
    assert time.monotonic() - start < 30


def test_children_that_all_fail_at_once_give_the_failure():
    status = launch.run_children(python("import sys; sys.exit(4)"), [{"JAX_PROCESS_ID": "0"}, {"JAX_PROCESS_ID": "1"}])
    assert status == 4


def test_success_is_zero_and_each_signal_reaches_each_child_once(tmp_path):
    code = ("import os, signal, sys, time\n"
            f"path = os.path.join({str(tmp_path)!r}, os.environ['JAX_PROCESS_ID'])\n"
            "def got(signum, frame):\n"
            "    open(path, 'a').write('int\\n')\n"
            "signal.signal(signal.SIGINT, got)\n"
            "open(path + '.ready', 'w').close()\n"
            "deadline = time.time() + 60\n"
            "while time.time() < deadline and not os.path.exists(path):\n"
            "    time.sleep(0.05)\n"
            "time.sleep(0.5)\n")
    children = [{"JAX_PROCESS_ID": "0"}, {"JAX_PROCESS_ID": "1"}]

    def interrupt_once_ready():
        while not all((tmp_path / f"{i}.ready").exists() for i in range(2)):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C reaches the launcher alone (children have their own group)

    threading.Thread(target=interrupt_once_ready, daemon=True).start()
    assert launch.run_children(python(code), children) == 0
    assert [(tmp_path / str(i)).read_text() for i in range(2)] == ["int\n", "int\n"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the launcher's handler is gone


def test_yolojax_train_as_two_cpu_processes(shapes_dataset, tmp_path):
    """The real command: two children (1 CPU device each) train one run together, validate it, and stop; with
    cache=ram, process 0 decodes the images into one file per split that process 1 maps."""
    data = shapes_dataset(16, 8, 64)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "SLURM_", "OMPI_"))}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONUNBUFFERED="1", TMPDIR=str(scratch),
               YOLOJAX_INIT_TIMEOUT_S="60", YOLOJAX_HEARTBEAT_TIMEOUT_S="20")
    argv = ["device=cpu", "processes=2", "cfg=none", f"data={data}", "imgsz=64", "batch=4", "nbs=4", "epochs=1",
            "workers=0", "plots=False", "warmup_epochs=0", f"project={tmp_path}", "name=run", "cache=ram"]
    done = subprocess.run([sys.executable, "-m", "yolojax.cli", "train", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "yolojax train: 2 processes (jax.distributed on 127.0.0.1), devices cpu, cpu" in log
    assert "on 2 cpu device(s)" in log  # one mesh over both processes' devices
    assert log.count("Validating ") == 1  # process 0 alone validates the best weights, then both exit
    saved = yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())
    assert (saved["processes"], saved["device"]) == (1, "cpu")
    rows = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "run" / "weights" / "best" / "meta.json").is_file()
    assert not [p for p in scratch.iterdir() if p.name.startswith("yolojax_ram_cache_")]  # removed at the end


def test_a_child_whose_launcher_is_gone_stops():
    code = ("import os\nfrom yolojax.cli import launch\nlaunch.stop_with_launcher({})\n"
            "launch.stop_with_launcher({launch.LAUNCHER_VARIABLE: str(os.getppid() + 1_000_000)})\nprint('kept on')")
    done = subprocess.run(python(code), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "kept on" not in done.stdout
    assert "yolojax train: the launching process is gone; stopping" in done.stderr


def test_a_batch_that_does_not_split_is_one_line_before_anything_starts(tmp_path, capsys):
    from yolojax.cli.train import cli_main

    assert cli_main(["device=cpu", "processes=2", "batch=3", f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err == "yolojax train: batch=3 does not split over 2 processes; choose a multiple of 2\n"
    # one process with two devices: the run's own check, before its folder exists
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    done = subprocess.run([sys.executable, "-m", "yolojax.cli", "train", "device=cpu", "processes=1", "batch=3",
                           f"project={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == ("yolojax train: batch=3 does not split over the 2 cpu devices of "
                                                    "this run; choose a multiple of 2")
    assert not any(tmp_path.iterdir())
