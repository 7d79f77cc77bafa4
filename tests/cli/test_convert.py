"""Weight import from the reference's files and the yolojax weights format."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.cli.convert import cli_main
from yolojax.convert.files import convert_file
from yolojax.convert.mapping import (
    WeightMismatchError,
    infer_scale_and_classes,
    state_dict_to_variables,
    torch_key,
    variables_to_state_dict,
)
from yolojax.models.weights import load_weights, save_weights
from yolojax.models.yolov8 import YOLOv8

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
from yolojax.convert.reference import build_reference_model, reference_state_dict  # noqa: E402

NC = 3


@pytest.fixture(scope="module")
def reference():
    model = build_reference_model("n", NC, seed=7)
    return model, reference_state_dict(model)


def template(scale="n", nc=NC):
    model = YOLOv8(scale, nc)
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3))), jax.random.key(0))


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_key_naming_and_layout():
    assert torch_key("params", ("model_22", "cv2_0_1", "conv", "kernel")) == "model.22.cv2.0.1.conv.weight"
    assert torch_key("batch_stats", ("model_2", "m_0", "cv1", "bn", "var")) == "model.2.m.0.cv1.bn.running_var"
    state = {"model.0.conv.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)}
    tmpl = {"params": {"model_0": {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 2), jnp.float32)}}}}
    kernel = state_dict_to_variables(state, tmpl)["params"]["model_0"]["conv"]["kernel"]
    assert kernel[1, 2, 0, 1] == state["model.0.conv.weight"][1, 0, 1, 2]  # OIHW [o, i, h, w] -> HWIO [h, w, i, o]


def test_state_dict_round_trip(reference):
    _, state = reference
    variables = state_dict_to_variables(state, template())
    back = variables_to_state_dict(variables)
    assert set(back) == {k for k in state if not k.endswith("num_batches_tracked") and "dfl" not in k}
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key])


def test_infers_scale_and_class_count(reference):
    assert infer_scale_and_classes(reference[1]) == ("n", NC)


def test_wrong_class_count_names_first_mismatching_tensor(reference):
    with pytest.raises(WeightMismatchError, match=r"model\.22\.cv3\.0\.\d.* class count"):
        state_dict_to_variables(reference[1], template(nc=NC + 2))


def test_wrong_scale_names_first_mismatching_tensor(reference):
    with pytest.raises(WeightMismatchError, match=r"'model\.0\.bn\.running_mean' has shape \(16,\).*\(32,\)"):
        state_dict_to_variables(reference[1], template(scale="s"))


def test_missing_and_extra_tensors_are_named(reference):
    state = dict(reference[1])
    del state["model.9.cv2.bn.bias"]
    with pytest.raises(WeightMismatchError, match=r"'model\.9\.cv2\.bn\.bias'.* missing"):
        state_dict_to_variables(state, template())
    state = dict(reference[1], **{"model.23.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightMismatchError, match=r"first 'model\.23\.extra\.weight'"):
        state_dict_to_variables(state, template())


def test_weights_format_round_trip(tmp_path, reference):
    variables = state_dict_to_variables(reference[1], template())
    meta = {"scale": "n", "num_classes": NC, "names": ["a", "b", "c"], "imgsz": 320}
    save_weights(tmp_path / "w", variables, meta)
    loaded, loaded_meta = load_weights(tmp_path / "w")
    assert_trees_equal(loaded, variables)
    assert {k: loaded_meta[k] for k in meta} == meta


def test_load_weights_rejects_a_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FileNotFoundError, match="yolojax convert"):
        load_weights(path)


def test_convert_plain_state_dict_and_safetensors(tmp_path, reference):
    from safetensors.numpy import save_file

    _, state = reference
    expected = state_dict_to_variables(state, template())
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "sd.pt")
    save_file(state, str(tmp_path / "sd.safetensors"))
    assert cli_main([str(tmp_path / "sd.pt"), str(tmp_path / "a"), "names=x,y,z"]) == 0
    assert convert_file(tmp_path / "sd.safetensors", tmp_path / "b", scale="n", num_classes=NC)["scale"] == "n"
    for name in ("a", "b"):
        variables, meta = load_weights(tmp_path / name)
        assert_trees_equal(variables, expected)
        assert (meta["scale"], meta["num_classes"]) == ("n", NC)
    assert load_weights(tmp_path / "a")[1]["names"] == ["x", "y", "z"]


def test_ultralytics_checkpoint_needs_explicit_trust(tmp_path, reference, capsys):
    model, state = reference
    model.names = {0: "cat", 1: "dog", 2: "cow"}
    torch.save({"model": model, "epoch": -1}, tmp_path / "ckpt.pt")
    assert cli_main([str(tmp_path / "ckpt.pt"), str(tmp_path / "out")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert cli_main([str(tmp_path / "ckpt.pt"), str(tmp_path / "out"), "--trust-pickle"]) == 0
    variables, meta = load_weights(tmp_path / "out")
    assert meta["names"] == ["cat", "dog", "cow"]
    assert_trees_equal(variables, state_dict_to_variables(state, template()))


def test_convert_cli_reports_wrong_class_count(tmp_path, reference, capsys):
    torch.save({k: torch.from_numpy(v) for k, v in reference[1].items()}, tmp_path / "sd.pt")
    assert cli_main([str(tmp_path / "sd.pt"), str(tmp_path / "out"), "nc=80"]) == 2
    err = capsys.readouterr().err
    assert "nc=80" in err and "model.22.cv3" in err
