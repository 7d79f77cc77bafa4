"""RandomHSV on device: OpenCV's uint8 HSV conversions reproduced bit for bit (all 2^24 inputs each way), the
device path equal to the CPU path image by image, in the pipeline and through the train step."""
import cv2
import jax
import numpy as np
import pytest

from yolojax.data import build_dataset
from yolojax.data import transforms as T
from yolojax.data.device.hsv import apply_hsv_luts, bgr_to_hsv_u8, hsv_to_rgb_u8


def every_triple():
    """(4096, 4096, 3) uint8 holding each of the 2^24 byte triples once (width a multiple of OpenCV's 32-pixel
    vector block, so every pixel goes through its vectorised loop)."""
    code = np.arange(1 << 24, dtype=np.uint32)
    return np.stack([code >> 16, (code >> 8) & 255, code & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)


def mismatches(got, want):
    diff = np.abs(np.asarray(got).astype(np.int32) - want.astype(np.int32))
    return int(diff.any(-1).sum()), int(diff.max())


def test_bgr_to_hsv_equals_opencv_on_every_colour():
    image = every_triple()
    assert mismatches(jax.jit(bgr_to_hsv_u8)(image), cv2.cvtColor(image, cv2.COLOR_BGR2HSV)) == (0, 0)


def test_hsv_to_rgb_equals_opencv_on_every_triple_including_hue_180_to_255():
    hsv = every_triple()
    assert mismatches(jax.jit(hsv_to_rgb_u8)(hsv), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)) == (0, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apply_hsv_luts_equals_the_cpu_random_hsv(seed):
    """Random images and gains (default strengths, and large ones that wrap the hue and clip s / v)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (6, 48, 96, 3), dtype=np.uint8)
    images[:3] = cv2.GaussianBlur(images[:3].reshape(-1, 96, 3), (9, 9), 3).reshape(3, 48, 96, 3)  # smooth too
    strengths = [(0.015, 0.7, 0.4)] * 4 + [(0.5, 0.9, 0.9)] * 2
    gains = [T.sample_hsv_gains(rng, *s) for s in strengths]
    luts = np.stack([T.hsv_tables(g)[:, 0, :] for g in gains])
    got = np.asarray(jax.jit(apply_hsv_luts)(images, luts))
    want = np.stack([T.apply_hsv(im, g, to_rgb=True) for im, g in zip(images, gains)])
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def shapes_yaml(shapes_dataset):
    return shapes_dataset(8, 4, 64)


def data_cfg(shapes_yaml, **kw):
    return {"data": str(shapes_yaml), "imgsz": 64, "batch": 2, "workers": 0, "degrees": 5.0, "mixup": 0.5, **kw}


def test_pipeline_hsv_on_device_batches_equal_the_cpu_batches_after_the_device_step(shapes_yaml):
    cpu = build_dataset(data_cfg(shapes_yaml), "train", 3)
    dev = build_dataset(data_cfg(shapes_yaml, hsv_on_device=True), "train", 3)
    assert dev.hsv_on_device and not cpu.hsv_on_device
    for want, got in zip(cpu.iterator(1), dev.iterator(1)):
        assert "hsv_lut" not in want
        assert got["hsv_lut"].shape == (2, 256, 3) and got["hsv_lut"].dtype == np.uint8
        assert got["images"].shape == want["images"].shape and got["images"].dtype == np.uint8
        for key in ("bboxes", "cls", "mask"):
            np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(np.asarray(apply_hsv_luts(got["images"], got["hsv_lut"])), want["images"])


def test_hsv_on_device_is_ignored_without_gains_and_for_val_and_auto_is_off_on_cpu(shapes_yaml):
    no_gains = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    plain = next(build_dataset(data_cfg(shapes_yaml, **no_gains), "train", 0).iterator(0))
    ds = build_dataset(data_cfg(shapes_yaml, hsv_on_device=True, **no_gains), "train", 0)
    batch = next(ds.iterator(0))
    assert not ds.hsv_on_device and "hsv_lut" not in batch
    np.testing.assert_array_equal(batch["images"], plain["images"])
    val = next(build_dataset(data_cfg(shapes_yaml, hsv_on_device=True), "val", 0).iterator(0))
    assert "hsv_lut" not in val
    assert not build_dataset(data_cfg(shapes_yaml, hsv_on_device="auto"), "train", 0).hsv_on_device


def test_preview_draws_device_hsv_batches_in_rgb(shapes_yaml):
    from yolojax.data.preview import draw_batch_grid

    cpu = next(build_dataset(data_cfg(shapes_yaml), "train", 0).iterator(0))
    dev = next(build_dataset(data_cfg(shapes_yaml, hsv_on_device=True), "train", 0).iterator(0))
    np.testing.assert_array_equal(draw_batch_grid(dev), draw_batch_grid(cpu))


def test_train_step_on_a_device_hsv_batch_equals_the_cpu_hsv_batch_and_compiles_once(shapes_yaml):
    """YOLOv8n, fp32, 64 px, batch 2: the same loss from both pipelines; one compile over two device-HSV steps."""
    from yolojax.detectors import YOLOv8Task
    from yolojax.train.config import load_config
    from yolojax.train.optim import hyper_at, plan_optimizer
    from yolojax.train.setup import initial_state
    from yolojax.train.step import build_train_step, make_mesh, replicate, shard_batch

    cpu_ds = build_dataset(data_cfg(shapes_yaml), "train", 0)
    dev_ds = build_dataset(data_cfg(shapes_yaml, hsv_on_device=True), "train", 0)
    task = YOLOv8Task(scale="n", num_classes=cpu_ds.num_classes)
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=2", "nbs=2", "imgsz=64"])
    plan = plan_optimizer(cfg, num_classes=task.num_classes, dataset_size=8, batches_per_epoch=4)
    state0, optimizer = initial_state(task, plan, (64, 64))
    mesh = make_mesh()
    traces = []

    def loss_fn(params, model_state, batch, key):
        traces.append("hsv_lut" in batch)
        return task.loss_fn(params, model_state, batch, key)

    def run(ds, steps):
        step = build_train_step(loss_fn, optimizer, mesh)
        state, losses = replicate(jax.tree.map(np.copy, state0), mesh), []
        for i, batch in zip(range(steps), ds.iterator(0)):
            state, metrics = step(state, shard_batch(batch, mesh), replicate(hyper_at(plan, i, 0), mesh))
            losses.append(float(metrics["loss"]))
        return losses, step

    cpu_losses, _ = run(cpu_ds, 1)
    dev_losses, dev_step = run(dev_ds, 2)
    np.testing.assert_allclose(dev_losses[0], cpu_losses[0], rtol=1e-6)
    assert dev_step._cache_size() == 1 and traces == [False, False]  # the task never sees hsv_lut
