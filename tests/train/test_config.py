"""Configs: reference defaults, recipe overlay, key=value overrides, errors that name the key and suggest one."""
from pathlib import Path

import pytest
import yaml

from yolojax.train.config import (
    CONFIG_DIR,
    ConfigError,
    load_config,
    load_model_config,
    parse_overrides,
)


@pytest.mark.parity
def test_defaults_equal_the_reference_default_yaml_for_shared_keys():
    pytest.importorskip("ultralytics")
    import ultralytics

    reference = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "default.yaml").read_text())
    ours = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    ours_only = {"model", "data", "cfg", "weights", "project", "name", "max_boxes", "nonfinite_patience",
                 "tensorboard", "grad_clip", "ema_decay", "ema_tau", "mosaic9", "conf"}
    shared = sorted(set(ours) & set(reference) - ours_only)
    assert len(shared) > 40
    assert {k: ours[k] for k in shared} == {k: reference[k] for k in shared}


def test_overrides_parse_yaml_scalars_and_win_over_the_recipe():
    cfg = load_config(["epochs=3", "cos_lr=true", "lr0=1e-3", "name=my run", "time="])
    assert (cfg.epochs, cfg.cos_lr, cfg.lr0, cfg.name, cfg.time) == (3, True, 0.001, "my run", None)
    recipe = yaml.safe_load((CONFIG_DIR / "shapes.yaml").read_text())
    assert load_config([]).imgsz == recipe["imgsz"] != load_config(["cfg=none"]).imgsz == 640


def test_int_is_accepted_for_a_float_key():
    cfg = load_config(["lr0=1", "warmup_epochs=0"])
    assert isinstance(cfg.lr0, float) and cfg.lr0 == 1.0 and cfg.warmup_epochs == 0.0


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"command line: unknown key 'lr_0'.*did you mean 'lr0'"):
        load_config(["lr_0=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'.*did you mean 'epochs'"):
        load_config(["epoch=3"])


def test_bad_value_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"epochs='ten' must be int, got str"):
        load_config(["epochs=ten"])
    with pytest.raises(ConfigError, match=r"cos_lr=1 must be bool"):
        load_config(["cos_lr=1"])


def test_range_checks_and_malformed_arguments():
    with pytest.raises(ConfigError, match="imgsz=100 must be a positive multiple of 32"):
        load_config(["imgsz=100"])
    with pytest.raises(ConfigError, match="optimizer='Adagrad'"):
        load_config(["optimizer=Adagrad"])
    with pytest.raises(ConfigError, match="expected key=value, got 'epochs'"):
        parse_overrides(["epochs"])


def test_bad_recipe_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batchsize: 8\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown key 'batchsize'.*did you mean 'batch'"):
        load_config([f"cfg={bad}"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([f"cfg={tmp_path / 'missing.yaml'}"])


def test_model_configs_name_family_and_scale_and_unknown_model_suggests():
    assert load_model_config("yolov8s") == {"family": "yolov8", "scale": "s"}
    with pytest.raises(ConfigError, match=r"model='yolov8q'.*did you mean 'yolov8"):
        load_model_config("yolov8q")
