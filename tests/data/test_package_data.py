"""The YAML configs ship inside the package: a built wheel holds them, and an installed copy (no source tree around
it) finds its defaults, recipes, model specs and data yamls."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import yolojax
from yolojax.data.pipeline import CONFIG_DATA_DIR, resolve_data
from yolojax.train.config import (
    CONFIG_DIR,
    DEFAULT_FILE,
    load_config,
    load_model_config,
    recipe_path,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(yolojax.__file__).resolve().parent
CONFIGS = sorted(p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "configs").rglob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built offline from a copy of the checkout (the build writes build/ and egg-info beside its input)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "yolojax", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (built,) = out.glob("yolojax-*.whl")
    return built


def test_the_configs_are_read_from_inside_the_package():
    assert {"default.yaml", "shapes.yaml", "data/shapes.yaml", "models/yolov8n.yaml"} <= {
        c.removeprefix("configs/") for c in CONFIGS}
    for path in (CONFIG_DIR, DEFAULT_FILE, recipe_path("shapes"), CONFIG_DATA_DIR):
        assert path.resolve().is_relative_to(PACKAGE / "configs"), path
    assert load_model_config("yolov8s") == {"family": "yolov8", "scale": "s"}
    assert resolve_data("voc_tfds") == ("tfds", "voc/2007")


def test_user_yaml_paths_still_load(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("epochs: 2\nmodel: my_model.yaml\n")
    (tmp_path / "my_model.yaml").write_text("family: yolov8\nscale: m\n")
    cfg = load_config([f"cfg={recipe}"])
    assert cfg.epochs == 2 and load_model_config(str(tmp_path / cfg.model)) == {"family": "yolov8", "scale": "m"}
    data = tmp_path / "data.yaml"
    data.write_text("tfds: mnist\n")
    assert resolve_data(str(data)) == ("tfds", "mnist")


def test_the_wheel_holds_every_config_yaml(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert CONFIGS and {f"yolojax/{c}" for c in CONFIGS} <= names
    assert not any(n.startswith("configs/") for n in names)


_INSTALLED_CHECK = """
import json, yolojax
from yolojax.data.pipeline import resolve_data
from yolojax.train.config import DEFAULT_FILE, load_config, load_model_config, recipe_path
cfg = load_config(["epochs=1"])
print("RESULT " + json.dumps({"package": yolojax.__file__, "default": str(DEFAULT_FILE),
                              "recipe": str(recipe_path(cfg.cfg)), "imgsz": cfg.imgsz,
                              "model": load_model_config(cfg.model), "data": list(resolve_data("voc_tfds"))}))
"""


def test_an_installed_wheel_finds_its_configs_without_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # PYTHONPATH comes before the checkout's editable-install finder, so `yolojax` is the installed copy
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _INSTALLED_CHECK], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    package = site / "yolojax"
    assert Path(out["package"]).parent == package
    assert Path(out["default"]) == package / "configs" / "default.yaml"
    assert Path(out["recipe"]) == package / "configs" / "shapes.yaml" and out["imgsz"] == 128
    assert out["model"] == {"family": "yolov8", "scale": "n"} and out["data"] == ["tfds", "voc/2007"]
