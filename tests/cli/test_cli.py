"""`yolojax CMD ...`: one parser for every command (yolojax.cli.args): unknown keys and bad values rejected in one line
naming the key, `--help` listing every key with its default, `--flag` forms read as key=value."""
import importlib
import shutil

import jax
import numpy as np
import pytest

import yolojax.cli
from yolojax.cli import COMMANDS, args, bench, convert, data, export, predict, train, val
from yolojax.data.pipeline import DEFAULTS as DATASET_DEFAULTS
from yolojax.detectors import build_task
from yolojax.models.weights import save_weights
from yolojax.train.config import ConfigError, default_values, load_config

# per command: arguments with a misspelt key, the key, and the key it should suggest
MISSPELT = {
    "train": (["epoch=3"], "epoch", "epochs"),
    "val": (["weights=w", "max_dets=1"], "max_dets", "max_det"),
    "predict": (["images", "weights=w", "save_dirs=out"], "save_dirs", "save_dir"),
    "convert": (["a.pt", "b", "--trust-pickles"], "trust_pickles", "trust_pickle"),
    "bench": (["--scale", "n"], "scale", "scales"),
    "data preview": (["preview", "mosiac=0"], "mosiac", "mosaic"),
    "data shapes": (["shapes", "num_trian=3"], "num_trian", "num_train"),
}


@pytest.fixture
def no_xla_flags(monkeypatch):
    """The dispatcher's XLA flags would stay in this process's environment; they do not matter here."""
    monkeypatch.setattr(yolojax.cli, "apply_default_xla_flags", lambda **_: "")


@pytest.mark.parametrize("name", MISSPELT)
def test_every_command_rejects_an_unknown_key_in_one_line(name, no_xla_flags, capsys):
    argv, key, suggested = MISSPELT[name]
    assert yolojax.cli.main([name.split()[0], *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (f"yolojax {name}: command line: unknown key {key!r}; "
                                    f"did you mean {suggested!r}?")


@pytest.mark.parametrize("argv, message", [
    (["val", "weights=w", "conf=abc"], "yolojax val: command line: conf='abc' must be float or int, got str"),
    (["val", "weights=w", "mode=voc"], "yolojax val: command line: mode='voc' must be one of coco, ultralytics"),
    (["predict", "images", "weights=w", "imgsz=big"], "yolojax predict: command line: imgsz='big' must be int"),
    (["convert", "a.pt", "b", "nc=x"], "yolojax convert: command line: nc='x' must be int"),
    (["convert", "a.pt", "b", "scale=q"], "yolojax convert: command line: scale='q' must be one of n, s, m, l, x"),
    (["bench", "--max-boxes", "16,x"], "yolojax bench: command line: max_boxes='16,x' must be a comma-separated"),
    (["bench", "scales=n,q"], "yolojax bench: command line: scales='n,q': 'q' is not one of"),
    (["bench", "--batch"], "yolojax bench: command line: --batch needs a value"),
    (["data", "preview", "imgsz=abc"], "yolojax data preview: command line: imgsz='abc' must be int"),
    (["train", "epochs"], "yolojax train: command line: unexpected argument 'epochs'"),
    (["predict"], "yolojax predict: command line: missing SOURCE"),
    (["convert", "a.pt"], "yolojax convert: command line: missing DST"),
    (["convert", "a.pt", "b", "c"], "yolojax convert: command line: unexpected argument 'c'"),
    (["val"], "yolojax val: command line: weights=PATH is required"),
    (["data", "previw"], "yolojax data: unknown command 'previw'; did you mean 'preview'?"),
])
def test_bad_values_and_arguments_are_one_line_naming_the_key(argv, message, no_xla_flags, capsys):
    assert yolojax.cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err


def _help(argv, capsys):
    assert yolojax.cli.main([*argv, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "data"])
def test_every_commands_help_lists_its_keys_with_their_defaults(name, no_xla_flags, capsys):
    command = importlib.import_module(COMMANDS[name][0]).COMMAND
    out = _help([name], capsys)
    assert out.startswith(f"usage: yolojax {name}")
    for key, spec in command.keys.items():
        assert f"  {key}={args.show(spec.default)} " in out, key


def test_data_help_lists_the_keys_of_both_subcommands(no_xla_flags, capsys):
    both = _help(["data"], capsys)
    for command in data.SUBCOMMANDS.values():
        assert _help(command.name.split(), capsys) in both
        for key, spec in command.keys.items():
            assert f"  {key}={args.show(spec.default)} " in both, key


def test_train_help_lists_every_key_of_default_yaml(no_xla_flags, capsys):
    out = _help(["train"], capsys)
    assert all(f"  {key}=" in out for key in default_values())
    assert "cfg=shapes overlays" in out and "imgsz=128" in out


def test_flags_read_as_key_value():
    flags = args.parse(bench.COMMAND, ["--scales", "n,s", "--small", "--max-boxes=16,100", "--no-reference",
                                       "--compile-cache", "/tmp/cache", "--batch", "8"])
    plain = args.parse(bench.COMMAND, ["scales=n,s", "small=true", "max_boxes=16,100", "reference=false",
                                       "compile_cache=/tmp/cache", "batch=8"])
    assert flags == plain
    assert (plain.opts.batch, plain.opts.small, plain.opts.reference) == (8, True, False)
    assert args.parse(convert.COMMAND, ["a", "b", "--trust-pickle"]).opts.trust_pickle is True


def test_values_are_yaml_scalars_and_text_keys_keep_their_text():
    parsed = args.parse(predict.COMMAND, ["img", "weights=007", "conf=1e-3", "rect=false", "imgsz=null"])
    assert parsed.positional == ["img"]
    assert (parsed.opts.weights, parsed.opts.conf, parsed.opts.rect, parsed.opts.imgsz) == ("007", 0.001, False,
                                                                                           None)
    assert args.parse(bench.COMMAND, ["max_boxes=16"]).opts.max_boxes == "16"
    assert args.parse(convert.COMMAND, ["a", "b", "nc=3", "names=x,y,z"]).opts.names == "x,y,z"


def test_coco_json_takes_the_gt_file_and_the_results_file_positionally():
    parsed = args.parse(val.COMMAND, ["--coco-json", "gt.json", "dt.json"])
    assert (parsed.opts.coco_json, parsed.positional) == ("gt.json", ["dt.json"])


def test_defaults_are_default_yaml_values_unless_the_command_says_otherwise():
    config = default_values()
    shared = [(val.COMMAND, k) for k in ("data", "iou", "max_det", "plots", "workers")]
    shared += [(predict.COMMAND, "iou"), (predict.COMMAND, "max_det"), (bench.COMMAND, "imgsz"),
               (convert.COMMAND, "imgsz")]
    shared += [(data.PREVIEW, k) for k in ("data", "imgsz", "batch", "epochs", "mosaic", "hsv_h", "seed")]
    for command, key in shared:
        assert command.keys[key].default == config[key], (command.name, key)
    assert val.COMMAND.keys["conf"].default == 0.001 and predict.COMMAND.keys["conf"].default == 0.25
    assert bench.COMMAND.keys["deterministic"].default is False  # the fastest step; train's default is True
    # the dataset's fallbacks are default.yaml's, except the device-finished augmentation (off for a plain caller)
    device_keys = {"hsv_on_device", "warp_on_device"}
    assert {k: v for k, v in DATASET_DEFAULTS.items() if k in config and k not in device_keys} == \
           {k: config[k] for k in DATASET_DEFAULTS if k in config and k not in device_keys}
    assert not any(DATASET_DEFAULTS[k] for k in device_keys)


def test_train_reads_flags_through_the_same_rules():
    assignments, positional = args.key_values(["--epochs", "3", "--cos-lr", "--no-val", "name=007", "--cache",
                                               "--resume=runs/x"], train.COMMAND.types)
    cfg = load_config(assignments)
    assert (cfg.epochs, cfg.cos_lr, cfg.val, cfg.name, positional) == (3, True, False, "007", [])
    assert (cfg.cache, cfg.resume) == (True, "runs/x")  # bool-or-text keys: a bare flag is true


def test_unknown_command_and_no_command(capsys):
    assert yolojax.cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert yolojax.cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_a_none_default_needs_its_types():
    with pytest.raises(ValueError, match="needs explicit types"):
        args.own_key(None, "(str) nothing")
    with pytest.raises(KeyError, match="not a key of default.yaml"):
        args.config_key("colour")
    with pytest.raises(ConfigError, match="expected key=value"):
        args.parse(val.COMMAND, ["=3"])


def test_val_on_saved_weights_writes_the_table_and_predictions(shapes_dataset, tmp_path, capsys):
    data_yaml = shapes_dataset(4, 4, 64)
    task = build_task({"family": "yolov8", "scale": "n"}, 3)
    # zero weights: what is checked is the command's wiring (weights -> task, dataset, table, JSON), not the mAP
    shapes = jax.eval_shape(lambda key: task.init(key, (64, 64)), jax.random.PRNGKey(0))
    save_weights(tmp_path / "w", jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes),
                 {"model": "yolov8", "scale": "n", "num_classes": 3, "names": ["a", "b", "c"], "imgsz": 64})
    assert val.cli_main([f"weights={tmp_path / 'w'}", f"data={data_yaml}", "batch=4", "workers=0", "plots=false",
                         "save_json=true", f"save_dir={tmp_path / 'val'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:2] == ["all", "4"]
    assert (tmp_path / "val" / "predictions.json").is_file()


def test_val_takes_reference_weights_through_the_import_cache(shapes_dataset, tmp_path, monkeypatch, capsys):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    from yolojax.convert.mapping import variables_to_state_dict

    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))
    data_yaml = shapes_dataset(4, 4, 64)
    task = build_task({"family": "yolov8", "scale": "n"}, 3)
    variables = jax.tree.map(np.asarray, task.init(jax.random.PRNGKey(0), (64, 64)))
    save_weights(tmp_path / "w", variables, {"model": "yolov8", "scale": "n", "num_classes": 3, "imgsz": 64})
    save_file({k: np.ascontiguousarray(v) for k, v in variables_to_state_dict(variables).items()},
              str(tmp_path / "w.safetensors"))
    common = [f"data={data_yaml}", "batch=4", "workers=0", "plots=false", "imgsz=64", "conf=0.0"]
    tables = []
    for weights in (tmp_path / "w", tmp_path / "w.safetensors"):
        assert val.cli_main([f"weights={weights}", *common, f"save_dir={tmp_path / weights.name}"]) == 0
        tables.append([line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["all"]])
    assert tables[0] and tables[0] == tables[1]
    assert any((tmp_path / "cache" / "imported").iterdir())


def test_train_on_a_dataset_without_labels_is_one_line_and_exit_2(shapes_dataset, tmp_path, monkeypatch, capsys):
    root = tmp_path / "nolabels"
    shutil.copytree(shapes_dataset(8, 4, 64).parent, root)
    shutil.rmtree(root / "labels")
    text = (root / "shapes.yaml").read_text().splitlines()
    (root / "shapes.yaml").write_text("\n".join([f"path: {root}", *text[1:]]) + "\n")
    monkeypatch.setattr(train, "apply_default_xla_flags", lambda **_: "")  # process-wide settings, not checked here
    monkeypatch.setattr(train, "enable_compilation_cache", lambda: None)
    argv = [f"data={root / 'shapes.yaml'}", "epochs=1", "imgsz=64", "batch=4", "workers=0", f"project={tmp_path}"]
    assert train.cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"yolojax train: {root / 'images' / 'train'}: no labelled images in the train split")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nolabels"]  # no run folder left behind


@pytest.mark.parametrize("module, argv", [(val, []), (predict, ["images"]), (export, [])])
def test_model_is_another_name_for_weights(module, argv):
    """The reference's CLI names the weights `model=`; val, predict and export read it as weights=."""
    assert args.parse(module.COMMAND, [*argv, "model=runs/x/weights/best"]).opts.weights == "runs/x/weights/best"
    assert args.parse(module.COMMAND, [*argv, "--model", "best.pt"]).opts.weights == "best.pt"
    with pytest.raises(ConfigError, match="model= is another name for weights=; give one of them"):
        args.parse(module.COMMAND, [*argv, "model=a", "weights=b"])
