"""`yolojax.YOLO`: what it resolves (model, weights, names, data) and what it hands to the functions the commands
run. The runs themselves are the CLI's (tests/train, tests/eval); tests/test_walkthrough.py runs them through here."""
import importlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml

import yolojax
from yolojax import api
from yolojax.detectors import YOLOv8Task
from yolojax.models.weights import save_weights
from yolojax.train.config import ConfigError
from yolojax.train.loop import TrainResult

NAMES = ["cat", "dog"]


def write_weights(path, scale="s", names=NAMES):
    """Weights of YOLOv8<scale> with zeros (their values do not matter here)."""
    shapes = jax.eval_shape(lambda k: YOLOv8Task(scale, len(names)).init(k, (64, 64)), jax.random.key(0))
    save_weights(path, jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes),
                 {"model": "yolov8", "scale": scale, "num_classes": len(names), "names": names, "imgsz": 64})
    return path


@pytest.fixture(scope="module")
def run_weights(tmp_path_factory):
    """runs/exp/weights/best of a (pretend) run on custom.yaml: weights beside the run's args.yaml."""
    run = tmp_path_factory.mktemp("runs") / "exp"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text(yaml.safe_dump({"data": "custom.yaml", "epochs": 3}))
    return write_weights(run / "weights" / "best")


def test_importing_yolojax_stays_cheap_and_yolo_loads_on_first_use():
    code = ("import sys, yolojax; print('jax' in sys.modules, 'yolojax.api' in sys.modules); "
            "yolojax.YOLO; print('yolojax.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]
    assert yolojax.YOLO is api.YOLO
    with pytest.raises(AttributeError, match="no attribute 'yolo'"):
        yolojax.yolo


def test_a_model_name_has_no_weights_yet():
    model = api.YOLO("yolov8m")
    assert (model.model, model.weights, model.names, model.task) == ("yolov8m", None, {}, "detect")
    for call in (model.val, lambda: model.predict("images"), model.export):
        with pytest.raises(ConfigError, match=r"YOLO\('yolov8m'\)\.\w+: no weights"):
            call()


def test_an_unknown_model_names_what_is_allowed():
    with pytest.raises(ConfigError, match=r"YOLO\('yolov9z'\): not reference weights \(.pt, .pth, .safetensors\), "
                                          r"a yolojax weights folder, nor a model name.*known: .*yolov8n"):
        api.YOLO("yolov9z")


def test_weights_of_a_run_give_model_names_and_data(run_weights):
    model = api.YOLO(run_weights)
    assert (model.model, model.weights, model.data) == ("yolov8s", run_weights, "custom.yaml")
    assert model.names == {0: "cat", 1: "dog"}
    assert repr(model) == f"YOLO(model='yolov8s', weights='{run_weights}')"


def test_train_runs_the_train_command_from_the_weights_and_then_holds_the_runs_best(run_weights, tmp_path, monkeypatch):
    seen = {}

    def fake_run(cfg):
        seen.update(cfg=cfg)
        write_weights(tmp_path / "train" / "weights" / "best", scale="s", names=["a", "b", "c"])
        (tmp_path / "train" / "args.yaml").write_text(yaml.safe_dump(dict(cfg)))
        return TrainResult(tmp_path / "train", 1, 2, 0.5, {"fitness": 0.5})

    monkeypatch.setattr(api, "run_training", fake_run)
    model = api.YOLO(run_weights)
    result = model.train(data=tmp_path / "three.yaml", epochs=1, imgsz=64)
    cfg = seen["cfg"]
    assert (cfg.model, cfg.weights, cfg.data, cfg.epochs, cfg.imgsz) == ("yolov8s", str(run_weights),
                                                                        str(tmp_path / "three.yaml"), 1, 64)
    assert cfg.optimizer == "AdamW" and cfg.name == "shapes"  # the command's default recipe (cfg=shapes)
    assert result.run_dir == tmp_path / "train" and result.last_metrics == {"fitness": 0.5}
    assert model.weights == tmp_path / "train" / "weights" / "best" and model.names == {0: "a", 1: "b", 2: "c"}
    assert model.data == str(tmp_path / "three.yaml")

    model.train(cfg=None, model="yolov8n", epochs=2)
    assert (seen["cfg"].model, seen["cfg"].optimizer, seen["cfg"].epochs) == ("yolov8n", "auto", 2)


def test_train_rejects_an_unknown_key_with_a_suggestion(run_weights):
    with pytest.raises(ConfigError, match=r"YOLO.train: unknown key 'epoch'; did you mean 'epochs'\?"):
        api.YOLO(run_weights).train(epoch=3)


def test_val_runs_the_val_commands_validate_and_returns_its_numbers(run_weights, monkeypatch):
    seen = {}
    per_class = [{"name": "cat", "map50": 0.75}, {"name": "dog", "map50": 0.25}]

    def fake_validate(opts):
        seen["opts"] = opts
        return {"map50": 0.5, "map50_95": 0.25, "precision": 0.75, "recall": 0.625, "per_class": per_class}

    monkeypatch.setattr(api.val_command, "validate", fake_validate)
    metrics = api.YOLO(run_weights).val(batch=4, mode="ultralytics")
    opts = seen["opts"]
    assert (opts.weights, opts.data, opts.batch, opts.mode, opts.conf) == (str(run_weights), "custom.yaml", 4,
                                                                           "ultralytics", 0.001)
    assert (metrics.map50, metrics.map50_95, metrics.precision, metrics.recall) == (0.5, 0.25, 0.75, 0.625)
    assert metrics.per_class == tuple(per_class) and metrics.details["map50"] == 0.5
    with pytest.raises(ConfigError, match="YOLO.val: mode='voc' must be one of coco, ultralytics"):
        api.YOLO(run_weights).val(mode="voc")
    with pytest.raises(ConfigError, match="YOLO.val: batch='many' must be int"):
        api.YOLO(run_weights).val(batch="many")


def test_predict_hands_source_weights_and_keys_to_eval_predict(run_weights, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(api, "predict", lambda source, weights, **kw: seen.update(source=source, weights=weights,
                                                                                  kw=kw) or ["result"])
    assert api.YOLO(run_weights).predict(tmp_path / "images", conf=0.5, log=None) == ["result"]
    assert seen == {"source": str(tmp_path / "images"), "weights": str(run_weights), "kw": {"conf": 0.5, "log": None}}


def test_export_calls_export_model_with_the_weights(run_weights, monkeypatch):
    if importlib.util.find_spec("yolojax.export") is None:
        pytest.skip("yolojax.export is not part of this tree")
    exporter = importlib.import_module("yolojax.export")
    seen = {}
    monkeypatch.setattr(exporter, "export_model", lambda weights, **kw: seen.update(weights=weights, kw=kw) or "f")
    assert api.YOLO(run_weights).export(format="onnx", imgsz=64, half=False) == "f"
    assert seen == {"weights": str(run_weights), "kw": {"format": "onnx", "imgsz": 64, "half": False}}
