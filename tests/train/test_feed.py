"""PipelineData: one train iterator (one set of worker processes) across the epochs of a run."""
import numpy as np
import pytest

from yolojax.data import build_dataset
from yolojax.train.config import Config
from yolojax.train.feed import PipelineData


@pytest.fixture(scope="module")
def shapes_yaml(shapes_dataset):
    return shapes_dataset(16, 4, 64)


def config(shapes_yaml, **kw):
    return Config({"data": str(shapes_yaml), "imgsz": 64, "batch": 4, "workers": 0, "seed": 3, "epochs": 3,
                   "close_mosaic": 1, "degrees": 5.0, **kw})


def assert_same(got, expected):
    assert len(got) == len(expected)
    for x, y in zip(got, expected):
        for key in ("images", "bboxes", "cls", "mask"):
            np.testing.assert_array_equal(x[key], y[key])


def per_epoch(cfg, epoch):
    return list(build_dataset(cfg, "train", seed=cfg.seed).iterator(epoch, workers=0))


def test_consecutive_epochs_share_one_iterator_and_give_each_epochs_batches(shapes_yaml):
    cfg = config(shapes_yaml, workers=1)
    data = PipelineData(cfg)
    first = list(data.train_epoch(0, mosaic=True))
    iterator = data._iterator
    second = list(data.train_epoch(1, mosaic=True))
    third = list(data.train_epoch(2, mosaic=False))  # close_mosaic: the last epoch without mosaic, same iterator
    assert data._iterator is iterator
    assert data.data_state() == 3 * data.batches_per_epoch
    data.close()
    for epoch, got in enumerate((first, second, third)):
        assert_same(got, per_epoch(cfg, epoch))


def test_resuming_mid_epoch_and_stopping_early_give_the_planned_batches(shapes_yaml):
    cfg = config(shapes_yaml)
    data = PipelineData(cfg)
    resumed = list(data.train_epoch(1, mosaic=True, start_batch=2))
    assert_same(resumed, per_epoch(cfg, 1)[2:])
    batches = data.train_epoch(2, mosaic=False)
    next(batches)  # the loop stopped after one batch (Ctrl-C); a later call starts where it is asked to
    again = list(data.train_epoch(2, mosaic=False))
    assert_same(again, per_epoch(cfg, 2))


def test_a_mosaic_setting_off_the_plan_gets_an_iterator_of_its_own(shapes_yaml):
    cfg = config(shapes_yaml)
    data = PipelineData(cfg)
    got = list(data.train_epoch(0, mosaic=False))
    expected = list(build_dataset(cfg, "train", seed=cfg.seed).iterator(0, workers=0, mosaic=False))
    assert_same(got, expected)
    assert_same(list(data.train_epoch(1, mosaic=True)), per_epoch(cfg, 1))  # that iterator ended with its epoch


def test_the_banner_names_the_augmentations_the_step_renders(shapes_yaml):
    assert PipelineData(config(shapes_yaml)).on_device == ""
    assert PipelineData(config(shapes_yaml, hsv_on_device=True)).on_device == "HSV"
    both = PipelineData(config(shapes_yaml, batch=8, hsv_on_device=True, warp_on_device=True)).on_device
    assert both == "Mosaic/RandomPerspective/flips/MixUp + HSV"
