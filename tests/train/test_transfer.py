"""Fine-tuning from weights that do not fit the model: what fits is taken over bit for bit, the rest is initialised
afresh, and the count is printed (yolojax.train.transfer, through initial_state and `yolojax train weights=`)."""
import contextlib
import io

import jax
import numpy as np
import pytest

from yolojax.cli.train import cli_main
from yolojax.cli.weights import resolve_weights, with_pretrained
from yolojax.detectors import YOLOv8Task
from yolojax.models.weights import load_weights, save_weights
from yolojax.train.config import ConfigError, load_config
from yolojax.train.optim import plan_optimizer
from yolojax.train.setup import initial_state
from yolojax.train.transfer import flat_leaves, initial_variables, threefry_as_kernels, transfer_variables

HW = (64, 64)


def random_variables(task, seed):
    """Variables of `task`'s shapes drawn from `seed` (no model init needed)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: task.init(k, HW), jax.random.key(0))
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def fresh_variables(task, fill):
    return jax.tree.map(lambda s: np.full(s.shape, fill, np.float32),
                        jax.eval_shape(lambda k: task.init(k, HW), jax.random.key(0)))


@pytest.fixture(scope="module")
def weights_80(tmp_path_factory):
    """80-class YOLOv8n weights (random values) in the yolojax weights format."""
    path = tmp_path_factory.mktemp("w") / "coco80"
    save_weights(path, random_variables(YOLOv8Task("n", 80), seed=1),
                 {"model": "yolov8", "scale": "n", "num_classes": 80, "imgsz": 640})
    return path


@pytest.fixture(scope="module")
def fine_tuned(weights_80):
    """The state at step 0 of a 3-class run started from the 80-class weights, and what it printed."""
    cfg = load_config(["cfg=none", "optimizer=SGD"])
    plan = plan_optimizer(cfg, num_classes=3, dataset_size=8, batches_per_epoch=2)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        state, _ = initial_state(YOLOv8Task("n", 3), plan, HW, seed=0, variables=load_weights(weights_80)[0])
    return state, out.getvalue().splitlines()


def test_fitting_tensors_are_bit_identical_at_step_0_and_the_class_branch_is_fresh(weights_80, fine_tuned):
    state, printed = fine_tuned
    source = flat_leaves(load_weights(weights_80)[0])
    for name, tree in (("live", state.variables()), ("ema", state.ema_variables())):
        got = flat_leaves(jax.device_get(tree))
        # nc 80 -> 3 narrows YOLOv8n's class branch (hidden width max(64, min(nc, 100))): all of cv3 changes shape
        head = {p for p in got if "/model_22/cv3_" in p}
        assert len(head) == 3 * (2 * 5 + 2)  # per level: 2 ConvBNAct (kernel, scale, bias, mean, var) + a conv
        for path, value in got.items():
            if path in head:
                assert value.shape != source[path].shape, path
            else:
                assert np.asarray(value).tobytes() == source[path].tobytes(), f"{name}: {path}"
    assert printed == [f"Transferred {len(got) - len(head)}/{len(got)} items from pretrained weights"]


def test_the_class_head_is_initialised_as_a_run_without_weights(fine_tuned):
    state, _ = fine_tuned
    init_key = jax.random.split(jax.random.PRNGKey(0))[0]  # initial_state's seed split
    fresh = flat_leaves(jax.device_get(initial_variables(YOLOv8Task("n", 3), init_key, HW)))
    got = flat_leaves(jax.device_get(state.variables()))
    head = [p for p in got if "/model_22/cv3_" in p]
    for path in head:
        np.testing.assert_array_equal(got[path], fresh[path], err_msg=path)
    bias = got["params/model_22/cv3_0_2/bias"]
    np.testing.assert_allclose(bias, np.log(5 / 3 / (640 / 8) ** 2), rtol=1e-6)  # the class prior, for nc=3


def test_another_scale_takes_over_only_what_fits():
    source = random_variables(YOLOv8Task("n", 80), seed=2)
    variables, report = transfer_variables(source, fresh_variables(YOLOv8Task("s", 80), fill=0.5))
    got, had = flat_leaves(variables), flat_leaves(source)
    # the box branch's last conv has 4 * reg_max = 64 outputs at every scale; the stem is twice as wide in s
    for level in range(3):
        path = f"params/model_22/cv2_{level}_2/bias"
        assert got[path].tobytes() == had[path].tobytes()
    assert got["params/model_0/conv/kernel"].shape == (3, 3, 3, 32)
    assert np.all(got["params/model_0/conv/kernel"] == 0.5)
    assert "params/model_0/conv/kernel" in report.reinitialised
    assert 0 < report.transferred < report.total == len(got)
    assert report.message() == f"Transferred {report.transferred}/{report.total} items from pretrained weights"


def test_nothing_fitting_says_so():
    _, report = transfer_variables({"params": {"other": np.zeros(3, np.float32)}},
                                   {"params": {"dense": {"kernel": np.zeros((2, 2), np.float32)}}})
    assert (report.transferred, report.total) == (0, 1)
    assert "none fits" in report.message()


@pytest.fixture(scope="module")
def reference_80():
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from yolojax.convert.reference import build_reference_model

    return build_reference_model("n", 80, seed=3)


def test_reference_safetensors_are_imported_once_and_transfer_exactly(reference_80, tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from yolojax.convert import cache
    from yolojax.convert.mapping import state_dict_to_variables
    from yolojax.convert.reference import reference_state_dict

    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))
    state = reference_state_dict(reference_80)
    save_file(state, str(tmp_path / "yolov8n.safetensors"))
    folder, meta = resolve_weights(tmp_path / "yolov8n.safetensors")
    assert folder.parent == tmp_path / "cache" / "imported" and (meta["scale"], meta["num_classes"]) == ("n", 80)
    monkeypatch.setattr(cache, "convert_file", lambda *a, **k: pytest.fail("converted twice"))
    assert resolve_weights(tmp_path / "yolov8n.safetensors")[0] == folder

    expected = flat_leaves(state_dict_to_variables(state, fresh_variables(YOLOv8Task("n", 80), 0.0)))
    variables, report = transfer_variables(load_weights(folder)[0], fresh_variables(YOLOv8Task("n", 3), 0.0))
    got = flat_leaves(variables)
    assert set(report.reinitialised) == {p for p in got if "/model_22/cv3_" in p}
    for path, value in got.items():
        if path not in report.reinitialised:
            assert value.tobytes() == expected[path].tobytes(), path

    cfg = load_config(["cfg=none", f"weights={tmp_path / 'yolov8n.safetensors'}", "model=yolov8s"])
    assert with_pretrained(cfg, model_given=True).model == "yolov8s"
    resolved = with_pretrained(cfg, model_given=False)
    assert (resolved.model, resolved.weights) == ("yolov8n", str(folder))


def test_train_refuses_a_pickled_checkpoint_without_trust_in_one_line(reference_80, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))
    torch.save({"model": reference_80, "epoch": -1}, tmp_path / "last.pt")
    argv = [f"weights={tmp_path / 'last.pt'}", f"project={tmp_path / 'runs'}"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"yolojax train: weights={tmp_path / 'last.pt'}: ") and "--trust-pickle" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("weights", ["missing_folder", "missing.pt"])
def test_train_names_weights_that_do_not_exist_in_one_line(weights, tmp_path, capsys):
    assert cli_main([f"weights={tmp_path / weights}", f"project={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"yolojax train: weights={tmp_path / weights}: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_bad_trust_pickle_value_is_a_config_error():
    from yolojax.cli.weights import split_trust_pickle

    assert split_trust_pickle(["epochs=3", "trust_pickle=true"]) == (True, ["epochs=3"])
    with pytest.raises(ConfigError, match="trust_pickle='maybe' must be bool"):
        split_trust_pickle(["trust_pickle=maybe"])


def test_threefry_as_kernels_keeps_the_bits_and_restores_the_setting():
    before = jax.config.jax_threefry_gpu_kernel_lowering
    key = jax.random.PRNGKey(3)
    draw = jax.jit(lambda k: jax.random.uniform(jax.random.fold_in(k, 7), (5,)))
    outside = draw(key)
    with threefry_as_kernels():
        assert jax.config.jax_threefry_gpu_kernel_lowering
        inside = jax.jit(lambda k: jax.random.uniform(jax.random.fold_in(k, 7), (5,)))(key)
    assert jax.config.jax_threefry_gpu_kernel_lowering == before
    np.testing.assert_array_equal(np.asarray(outside), np.asarray(inside))
