"""warp_on_device: the pipeline leaves the Mosaic + RandomPerspective pixels to the train step (tiles + render
inputs), and the rendered batch is the CPU pipeline's batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from yolojax.data import build_dataset
from yolojax.data.device.augment import finish_augmentation
from yolojax.data.device.tables import WARP_PREFIX
from yolojax.train.step import make_mesh, shard_batch


@pytest.fixture(scope="module")
def shapes_yaml(shapes_dataset):
    return shapes_dataset(32, 4, 96)


def warp_cfg(shapes_yaml, **kw):
    # batch 16 = the CPU pipeline's partner pool (max(batch, 16)): both modes draw the same mosaics
    return {"data": str(shapes_yaml), "imgsz": 96, "batch": 16, "workers": 0, "mixup": 0.0, "albumentations": False,
            "hsv_on_device": True, "fliplr": 0.5, "flipud": 0.3, **kw}


def device_inputs(batch):
    return {k: v for k, v in batch.items() if k in ("images", "hsv_lut") or k.startswith(WARP_PREFIX)}


@pytest.mark.parametrize("mosaic,degrees,shear,mixup", [(True, 0.0, 0.0, 0.0), (True, 10.0, 3.0, 0.0),
                                                        (False, 0.0, 0.0, 0.0), (False, 10.0, 0.0, 0.0),
                                                        (True, 0.0, 0.0, 0.5), (False, 5.0, 0.0, 0.5),
                                                        (False, 0.0, 0.0, None)])
def test_device_render_gives_the_cpu_pipeline_batch(shapes_yaml, mosaic, degrees, shear, mixup):
    # mixup None: the identity warp (no translate / scale), where the CPU path skips OpenCV and, unflipped, the filter
    aug = dict(degrees=degrees, shear=shear, mixup=mixup or 0.0)
    if mixup is None:
        aug.update(translate=0.0, scale=0.0)
    cpu = build_dataset(warp_cfg(shapes_yaml, **aug), "train", 3)
    dev = build_dataset(warp_cfg(shapes_yaml, warp_on_device=True, **aug), "train", 3)
    assert dev.warp_on_device and not cpu.warp_on_device
    render = jax.jit(finish_augmentation)
    pairs = list(zip(cpu.iterator(1, mosaic=mosaic), dev.iterator(1, mosaic=mosaic)))
    assert len(pairs) == 2
    for want, got in pairs:
        assert got["images"].shape == (16, 96, 96, 3) and got[WARP_PREFIX + "slots"].shape == (16, 4)
        for key in ("bboxes", "cls", "mask"):
            np.testing.assert_array_equal(got[key], want[key])
        expected = np.asarray(render(device_inputs(want))["images"])
        rendered = np.asarray(render(device_inputs(got))["images"])
        np.testing.assert_array_equal(rendered, expected)


def test_mosaic_tiles_come_from_the_sample_own_batch(shapes_yaml):
    batch = next(build_dataset(warp_cfg(shapes_yaml, warp_on_device=True), "train", 0).iterator(0, mosaic=True))
    slots = batch[WARP_PREFIX + "slots"]
    assert (slots[:, 0] == np.arange(16)).all()  # tile 0 is the sample's own image
    assert ((slots >= 0) & (slots < 16)).all()


def test_letterbox_uses_one_tile(shapes_yaml):
    batch = next(build_dataset(warp_cfg(shapes_yaml, warp_on_device=True), "train", 0).iterator(0, mosaic=False))
    slots = batch[WARP_PREFIX + "slots"]
    assert (slots[:, 0] == np.arange(16)).all() and (slots[:, 1:] == -1).all()


def test_shard_batch_keeps_the_render_inputs(shapes_yaml):
    batch = next(build_dataset(warp_cfg(shapes_yaml, warp_on_device=True), "train", 0).iterator(0))
    sharded = shard_batch(batch, make_mesh())
    assert {k for k in batch if k.startswith(WARP_PREFIX)} <= set(sharded)
    finished = jax.jit(finish_augmentation)(sharded)
    assert not any(k.startswith(WARP_PREFIX) or k == "hsv_lut" for k in finished)
    assert finished["images"].shape == (16, 96, 96, 3)


@pytest.mark.parametrize("setting,reason", [({"perspective": 0.001}, "perspective"),
                                            ({"mosaic9": True}, "mosaic9"), ({"hsv_on_device": False}, "hsv_on_device"),
                                            ({"multi_scale": True}, "multi_scale")])
def test_warp_on_device_true_with_unsupported_settings_is_a_clear_error(shapes_yaml, setting, reason):
    with pytest.raises(ValueError, match=reason):
        build_dataset(warp_cfg(shapes_yaml, warp_on_device=True, **setting), "train", 0)


def test_auto_stays_on_the_cpu_without_an_accelerator(shapes_yaml):
    assert not build_dataset(warp_cfg(shapes_yaml, warp_on_device="auto"), "train", 0).warp_on_device


def test_train_step_renders_on_device_and_compiles_once_across_mosaic_and_letterbox_epochs(shapes_yaml):
    from toy import ToyTask

    from yolojax.train.config import load_config
    from yolojax.train.optim import hyper_at, plan_optimizer
    from yolojax.train.setup import build_training
    from yolojax.train.step import replicate

    traces = []

    class CountingTask(ToyTask):
        def loss_fn(self, params, model_state, batch, key):
            traces.append(batch["images"].shape)
            assert not any(k.startswith(WARP_PREFIX) or k == "hsv_lut" for k in batch)  # finished before the task
            return super().loss_fn(params, model_state, batch, key)

    ds = build_dataset(warp_cfg(shapes_yaml, imgsz=64, batch=8, warp_on_device=True), "train", 0)
    task = CountingTask()
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=8", "nbs=16"])
    plan = plan_optimizer(cfg, num_classes=1, dataset_size=32, batches_per_epoch=4)
    run = build_training(task, plan, (64, 64))
    mesh, state, step = run.mesh, run.state, run.step
    for i, batch in enumerate([*ds.iterator(0, mosaic=True), *ds.iterator(1, mosaic=False)]):
        state, metrics = step(state, shard_batch(batch, mesh), replicate(hyper_at(plan, i, 0), mesh))
    assert bool(metrics["finite"]) and int(state.iteration) == 2 * ds.num_batches
    assert traces == [(8, 64, 64, 3)] and step._cache_size() == 1


def test_mosaic_partners_stay_in_the_sample_device_share(shapes_yaml, monkeypatch):
    from yolojax.data.device import options as device_options

    monkeypatch.setattr(device_options, "device_group", lambda batch_size: batch_size // 4)  # as with 4 devices
    batch = next(build_dataset(warp_cfg(shapes_yaml, warp_on_device=True), "train", 0).iterator(0, mosaic=True))
    slots = batch[WARP_PREFIX + "slots"]
    assert (slots[:, 0] == np.tile(np.arange(4), 4)).all()  # slots count within each device's 4 rows
    assert ((slots >= 0) & (slots < 4)).all()


def test_preview_renders_a_warp_batch_like_the_cpu_batch(shapes_yaml):
    from yolojax.data.preview import rgb_images

    cpu = next(build_dataset(warp_cfg(shapes_yaml), "train", 2).iterator(0))
    dev = next(build_dataset(warp_cfg(shapes_yaml, warp_on_device=True), "train", 2).iterator(0))
    np.testing.assert_array_equal(rgb_images(dev, 5), rgb_images(cpu, 5))
    assert rgb_images(dev, 5).shape == (5, 96, 96, 3)


def test_mixup_rides_along_as_partner_render_inputs_and_a_blend_table(shapes_yaml):
    from yolojax.data.transforms import mixup_table

    batch = next(build_dataset(warp_cfg(shapes_yaml, mixup=0.5, warp_on_device=True), "train", 0).iterator(0))
    luts = batch[WARP_PREFIX + "mix_lut"]
    assert luts.shape == (16, 65536) and batch[WARP_PREFIX + "mix_slots"].shape == (16, 4)
    unmixed = (luts == mixup_table(1.0)).all(1)
    assert 0 < unmixed.sum() < 16  # p = 0.5: some samples blend, the others keep their own image


def test_mixup_table_is_the_blend_formula_truncated():
    from yolojax.data.transforms import mixup_table

    table = mixup_table(0.3)
    for a, b in [(0, 0), (255, 0), (0, 255), (17, 200), (255, 255), (128, 129)]:
        assert table[256 * a + b] == int(a * 0.3 + b * (1 - 0.3))
    assert (mixup_table(1.0).reshape(256, 256) == np.arange(256)[:, None]).all()


_FOUR_DEVICE_SCRIPT = """
import json, sys, tempfile
import jax, numpy as np
from jax.sharding import PartitionSpec as P
sys.path[:0] = [{repo!r}]
from yolojax.data import build_dataset
from yolojax.data.device.augment import finish_augmentation
from yolojax.data.shapes import ensure_shapes_dataset
from yolojax.train.step import make_mesh, shard_batch
data = ensure_shapes_dataset(tempfile.mkdtemp(), num_train=32, num_val=4, imgsz=96)
cfg = dict(data=str(data), imgsz=96, batch=16, workers=0, mixup=0.5, albumentations=False, hsv_on_device=True,
           warp_on_device=True)
batch = next(build_dataset(cfg, "train", 0).iterator(0))
mesh = make_mesh()
sharded = shard_batch(batch, mesh)
render = jax.shard_map(lambda b: finish_augmentation(b)["images"], mesh=mesh, in_specs=P("data"), out_specs=P("data"))
got = np.asarray(jax.jit(render)(sharded))
per_group = [jax.jit(finish_augmentation)({{k: np.asarray(batch[k])[g * 4:(g + 1) * 4] for k in sharded}})["images"]
             for g in range(4)]
print("RESULT " + json.dumps({{"devices": mesh.size, "equal": bool((got == np.concatenate(per_group)).all()),
                              "slots_max": int(batch["warp_slots"].max()),
                              "mix_slots_max": int(batch["warp_mix_slots"].max())}}))
"""


def test_four_devices_render_each_share_from_its_own_tiles():
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _FOUR_DEVICE_SCRIPT.format(repo=repo)], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["devices"] == 4 and out["slots_max"] < 4 and out["mix_slots_max"] < 4  # 16 images / 4 devices
    assert out["equal"]
