"""One error path for every command: a user's mistake is one line on stderr naming the key or file and what is
allowed, exit status 2, no run folder left behind; a bug keeps its traceback. No leaked shared memory at exit."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import yolojax.cli
import yolojax.cli.train
from yolojax.cli import val
from yolojax.convert.mapping import variables_to_state_dict
from yolojax.data import build_dataset
from yolojax.data.labels import DataWarning
from yolojax.models.weights import load_weights, save_weights
from yolojax.models.yolov8 import YOLOv8

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def cli(monkeypatch, capsys):
    """`cli(*argv)` -> (exit status, stderr's lines) of `yolojax argv...` run in this process."""
    monkeypatch.setattr(yolojax.cli, "apply_default_xla_flags", lambda **_: "")
    monkeypatch.setattr(yolojax.cli.train, "apply_default_xla_flags", lambda **_: "")
    monkeypatch.setattr(yolojax.cli.train, "enable_compilation_cache", lambda: None)

    def run(*argv):
        status = yolojax.cli.main([str(a) for a in argv])
        return status, capsys.readouterr().err.splitlines()

    return run


@pytest.fixture
def dataset(shapes_dataset):
    return Path(shapes_dataset(16, 8, 64))


def _train(cli, project, *argv):
    return cli("train", "cfg=none", "imgsz=64", "batch=8", "epochs=1", "workers=0", f"project={project}", *argv)


def _write_yaml(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing_yaml", "data=.*missing.yaml: data yaml not found"),
    ("missing_folder", "nowhere/images/train: split path does not exist"),
    ("no_names", "nonames.yaml: no `names`"),
    ("model", "model='yolov9n': no file .*did you mean 'yolov8n'"),
    ("cache", "cache='maybe': use True or 'ram'"),
    ("fraction", "fraction=0.0 must be in \\(0, 1\\]"),
])
def test_train_mistakes_are_one_line_with_status_2_and_no_run_folder(case, expected, cli, dataset, tmp_path):
    data = {"missing_yaml": tmp_path / "missing.yaml",
            "missing_folder": _write_yaml(tmp_path / "d.yaml", f"path: {tmp_path}/nowhere\ntrain: images/train\n"
                                                               "val: images/val\nnames: [a]\n"),
            "no_names": _write_yaml(tmp_path / "nonames.yaml", f"path: {dataset.parent}\ntrain: images/train\n"
                                                               "val: images/val\n")}.get(case, dataset)
    extra = {"model": ["model=yolov9n"], "cache": ["cache=maybe"], "fraction": ["fraction=0"]}.get(case, [])
    status, err = _train(cli, tmp_path / "runs", f"data={data}", *extra)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("yolojax train: ")
    assert re.search(expected, err[0]), err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _coco_dataset(root: Path, yaml_names):
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.jpg"), np.full((32, 48, 3), 90, np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 10, 12], "iscrowd": 0}],
            "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}
    (root / "instances.json").write_text(json.dumps(coco))
    names = f"names: {yaml_names}\n" if yaml_names else ""
    return _write_yaml(root / "coco.yaml", f"path: {root}\nval: images\nval_json: instances.json\n{names}")


def test_coco_categories_name_the_classes_and_a_disagreeing_yaml_is_warned_about(tmp_path):
    plain = build_dataset({"data": str(_coco_dataset(tmp_path / "a", None)), "imgsz": 64, "batch": 1}, "val")
    assert plain.names == ("cat", "dog")
    with pytest.warns(DataWarning, match=r"\['cat', 'dog'\] are used; the data yaml's names \['dog', 'cat'\]"):
        other = build_dataset({"data": str(_coco_dataset(tmp_path / "b", "[dog, cat]")), "imgsz": 64, "batch": 1},
                              "val")
    assert other.names == ("cat", "dog")


@pytest.fixture
def weights(tmp_path):
    """Random YOLOv8n weights (3 classes; drawn with numpy on the model's shapes, nothing compiled) and a copy whose
    meta.json lost `num_classes`."""
    model = YOLOv8("n", 3)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32), shapes)
    good = save_weights(tmp_path / "w", variables, {"scale": "n", "num_classes": 3, "imgsz": 64})
    damaged = save_weights(tmp_path / "bad", variables, {"scale": "n", "num_classes": 3})
    meta = json.loads((damaged / "meta.json").read_text())
    del meta["num_classes"]
    (damaged / "meta.json").write_text(json.dumps(meta))
    return good, damaged, variables


def test_val_mistakes_are_one_line_naming_the_key_or_file(cli, dataset, weights, tmp_path):
    good, damaged, _ = weights
    common = [f"data={dataset}", f"save_dir={tmp_path / 'val'}"]
    assert cli("val", f"weights={good}", "batch=0", *common) == (2, ["yolojax val: command line: batch=0 must be "
                                                                      ">= 1"])
    status, err = cli("val", f"weights={good}", "split=test", *common)
    assert status == 2 and err == [f"yolojax val: data={dataset}: no `test` split (it has train, val)"]
    status, err = cli("val", f"weights={damaged}", *common)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"yolojax val: weights={damaged}: meta.json lacks "
                                                               "num_classes")
    status, err = cli("val", f"weights={tmp_path / 'none'}", *common)
    assert status == 2 and len(err) == 1 and "is not a yolojax weights directory" in err[0]


def test_val_rounds_imgsz_up_to_a_multiple_of_32_with_a_warning(capsys):
    assert (val.stride_multiple(100), val.stride_multiple(64), val.stride_multiple(1)) == (128, 64, 32)
    assert capsys.readouterr().err.splitlines() == [
        "yolojax val: warning: imgsz=100 must be a multiple of 32; using imgsz=128",
        "yolojax val: warning: imgsz=1 must be a multiple of 32; using imgsz=32"]


def test_convert_reads_safetensors_without_torch_and_names_the_extra_for_a_pt_file(cli, weights, tmp_path,
                                                                                   monkeypatch):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    _, _, variables = weights
    state = {key: np.ascontiguousarray(array) for key, array in variables_to_state_dict(variables).items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    (tmp_path / "w.pt").write_bytes(b"PK\x03\x04" + bytes(60))  # a zip archive, as torch.save writes
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as without the extra
    assert cli("convert", tmp_path / "w.safetensors", tmp_path / "out") == (0, [])
    loaded = dict(jax.tree_util.tree_flatten_with_path(load_weights(tmp_path / "out")[0])[0])
    expected = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
    assert loaded.keys() == expected.keys()
    for path, array in expected.items():
        np.testing.assert_array_equal(loaded[path], array)
    status, err = cli("convert", tmp_path / "w.pt", tmp_path / "out2")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"yolojax convert: {tmp_path / 'w.pt'} is a PyTorch file; reading it needs torch: "
                             "pip install 'yolojax[parity]'")


def test_convert_of_an_image_says_it_is_not_weights(cli, tmp_path):
    cv2.imwrite(str(tmp_path / "bus.jpg"), np.zeros((8, 8, 3), np.uint8))
    status, err = cli("convert", tmp_path / "bus.jpg", tmp_path / "out")
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"yolojax convert: {tmp_path / 'bus.jpg'} is not a weights file: it looks like a JPEG")
    assert "trust" not in err[0]


def test_predict_names_the_key_of_a_bad_value(cli):
    assert cli("predict", "images", "weights=w", "conf=abc") == (
        2, ["yolojax predict: command line: conf='abc' must be float or int, got str"])


def test_a_bug_keeps_its_traceback(cli, monkeypatch):
    monkeypatch.setattr(val, "validate", lambda opts: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli("val", "weights=w")


def test_the_installed_entry_point_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "yolojax.cli", "train", f"data={tmp_path / 'none.yaml'}",
                           f"project={tmp_path / 'runs'}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        f"yolojax train: data={tmp_path / 'none.yaml'}: data yaml not found"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


_WORKERS_JOB = """
import sys
from yolojax.data import build_dataset

def job(data):
    cfg = dict(data=data, imgsz=64, batch=4, workers=2, epochs=2)
    for batch in build_dataset(cfg, "val", 0).iterator(0):  # exhausted
        pass
    train = build_dataset(cfg, "train", 0).iterator(0, epochs=2)
    for _ in range(8):  # every batch
        batch = next(train)
    interrupted = build_dataset(cfg, "train", 0).iterator(0)
    batch = next(interrupted)
    print("DONE", flush=True)
    raise KeyboardInterrupt  # uncaught, with an iterator open and a batch held in the traceback's frames

if __name__ == "__main__":
    job(sys.argv[1])
"""


def test_data_workers_leave_no_shared_memory_behind_even_after_ctrl_c(dataset, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(_WORKERS_JOB)
    proc = subprocess.run([sys.executable, str(script), str(dataset)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode in (-2, 130) and "DONE" in proc.stdout, proc.stderr[-2000:]
    assert "leaked shared_memory" not in proc.stderr, proc.stderr[-2000:]
