"""What `yolojax train` prints (model summary, headed progress columns, validation lines, the final table), the
`device` key, `--version` and `train --help`."""
import importlib.metadata
import re

import jax
import pytest
import yaml
from toy import ToyData, ToyTask

from yolojax.cli import main as yolojax_main
from yolojax.cli.train import cli_main
from yolojax.detectors import YOLOv8Task
from yolojax.eval.artefacts import validate_best
from yolojax.eval.val import evaluate_ema
from yolojax.train import console
from yolojax.train.config import DEFAULT_FILE, ConfigError, load_config
from yolojax.train.devices import select_devices
from yolojax.train.loop import train

REFERENCE_V8N_GFLOPS = 8.7  # ultralytics 8.2.103 prints "8.7 GFLOPs" for YOLOv8n at 640 (fused)
REFERENCE_V8N_GRADIENTS = 3_157_184  # its "3157184 gradients" (80 classes): every parameter but the fixed DFL conv


def test_yolov8n_summary_counts_the_reference_parameters_and_its_gflops_within_10_percent():
    task = YOLOv8Task(scale="n", num_classes=80)
    variables = jax.eval_shape(lambda key: task.init(key, (64, 64)), jax.random.PRNGKey(0))
    gflops = console.forward_gflops(task, variables, 640)
    assert abs(gflops - REFERENCE_V8N_GFLOPS) / REFERENCE_V8N_GFLOPS < 0.1
    line = console.model_summary(task, variables, 640)
    assert line.startswith("YOLOv8n summary: ") and f"{REFERENCE_V8N_GRADIENTS:,} parameters" in line
    assert f"{gflops:.3g} GFLOPs at 640x640" in line
    assert 0 < console.count_layers(variables["params"]) < 1000


def test_progress_header_names_every_column_and_the_values_line_up_under_it():
    head = console.header(("box", "cls", "dfl"), "GPU_mem")
    assert head.split() == ["Epoch", "GPU_mem", "box_loss", "cls_loss", "dfl_loss", "Instances", "Size"]
    values = console.step_columns("3/18", 1.234, [1.5, 2.25, 0.875], 57, 640)
    assert values.split() == ["3/18", "1.23G", "1.5", "2.25", "0.875", "57", "640"]
    assert len(values) == len(head) == 7 * 11
    assert console.header(("box",), None).split() == ["Epoch", "box_loss", "Instances", "Size"]


def test_memory_column_only_for_devices_that_report_memory():
    class Accelerator:
        platform = "gpu"

        def memory_stats(self):
            return {"peak_bytes_in_use": 2_500_000_000, "bytes_in_use": 1}

    assert console.memory_column(Accelerator()) == "GPU_mem" and console.memory_gb(Accelerator()) == 2.5
    assert console.memory_column(jax.devices("cpu")[0]) is None  # the CPU reports none: no column


def test_a_training_run_prints_the_summary_headed_columns_and_validation_tables(tmp_path, capsys):
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=8", "imgsz=32", "nbs=8", "workers=0", "warmup_epochs=0",
                       f"project={tmp_path}", "epochs=2", "device=cpu", "plots=False", "save=False"])
    result = train(cfg, task=ToyTask(), data=ToyData(), evaluate=evaluate_ema, final_validation=validate_best)
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    params = console.count_parameters(ToyTask().init(jax.random.PRNGKey(0), (16, 16))["params"])
    assert f"toy summary: 5 layers, {params:,} parameters, {params:,} gradients" in out
    assert out.count("\n      Epoch   box_loss  size_loss  Instances       Size\n") == 2
    assert re.search(r"\r +1/2 +[0-9.e-]+ +[0-9.e-]+ +\d+ +32: ", err)  # bar values under the header
    header = "Class     Images  Instances      Box(P          R      mAP50  mAP50-95)"
    assert out.count(header) == 3  # after each of the 2 epochs, and in the final table
    rows = re.findall(r"^ +all +8 +(\d+) +([0-9.e-]+) +[0-9.e-]+ +[0-9.e-]+ +([0-9.e-]+)$", out, re.M)
    assert len(rows) == 3 and float(rows[1][2]) == pytest.approx(result.last_metrics["metrics/mAP50-95(B)"],
                                                                  abs=5e-4, rel=1e-2)
    assert "2 epochs completed in" in out and "Validating the last EMA weights..." in out
    assert re.search(r"^ +thing +8 +\d+", out, re.M)  # the per-class row of the final table
    assert [p.name for p in result.run_dir.iterdir() if p.suffix in (".jpg", ".png")] == []  # plots=False


def test_device_cpu_trains_on_cpu_devices_and_unknown_devices_are_one_line_errors(tmp_path, capsys):
    assert {d.platform for d in select_devices("cpu")} == {"cpu"}
    assert select_devices("0") == [jax.devices()[0]] and select_devices(None) == jax.devices()
    with pytest.raises(ConfigError, match=r"device=7: no device 7; this process has 1 \(1 cpu\)"):
        select_devices("7")
    with pytest.raises(ConfigError, match="device=gpu: no gpu device here"):
        select_devices("gpu")
    with pytest.raises(ConfigError, match="device='x1' must be cpu, gpu, tpu or device ids"):
        load_config(["device=x1"])
    assert cli_main([f"project={tmp_path}", "device=gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolojax train: device=gpu: no gpu device here") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # no run folder left behind


def test_version_prints_the_installed_package_version(capsys):
    for flag in ("--version", "-V"):
        assert yolojax_main([flag]) == 0
        assert capsys.readouterr().out.startswith(f"yolojax {importlib.metadata.version('yolojax')} (jax ")


def test_train_help_lists_every_default_yaml_key_with_its_default(capsys):
    assert cli_main(["--help"]) == 0
    text = capsys.readouterr().out
    defaults = yaml.safe_load(DEFAULT_FILE.read_text())
    missing = [k for k in defaults if not re.search(rf"^  {k}=", text, re.M)]
    assert not missing and "  device=null" in text and "  plots=true" in text
