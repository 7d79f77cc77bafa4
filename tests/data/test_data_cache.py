"""cache=disk: decoded images kept as .npy files beside the image files (the reference's disk cache)."""
import os
import shutil
import warnings

import numpy as np
import pytest

from yolojax.data import build_dataset, sources
from yolojax.data.labels import DataWarning


@pytest.fixture
def dataset_copy(shapes_dataset, tmp_path):
    """A private copy of a small shapes dataset (the .npy files must not leak into other tests' datasets)."""
    original = shapes_dataset(8, 2, 64)
    root = tmp_path / "shapes"
    shutil.copytree(original.parent, root)
    text = original.read_text().replace(str(original.parent), str(root))
    (root / original.name).write_text(text)
    return root / original.name


def config(data_yaml, **kw):
    return {"data": str(data_yaml), "imgsz": 64, "batch": 4, "workers": 0, "degrees": 5.0, **kw}


def epoch(data_yaml, **kw):
    return list(build_dataset(config(data_yaml, **kw), "train", 1).iterator(0, workers=0))


def assert_same(got, expected):
    assert len(got) == len(expected) > 0
    for x, y in zip(got, expected):
        for key in ("images", "bboxes", "cls", "mask"):
            np.testing.assert_array_equal(x[key], y[key])


def test_disk_cache_writes_npy_files_then_reads_them_instead_of_decoding(dataset_copy, monkeypatch):
    plain = epoch(dataset_copy)
    assert not list(dataset_copy.parent.rglob("*.npy"))
    first = epoch(dataset_copy, cache="disk")
    images = [p for p in (dataset_copy.parent / "images" / "train").iterdir() if p.suffix != ".npy"]
    assert sorted(p.with_suffix(".npy") for p in images) == sorted((dataset_copy.parent / "images" / "train")
                                                                 .glob("*.npy"))
    assert not list(dataset_copy.parent.rglob("*.tmp"))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although its .npy exists")
    monkeypatch.setattr(sources, "read_bgr", no_decoding)
    second = epoch(dataset_copy, cache="disk")
    assert_same(first, plain)
    assert_same(second, plain)


def test_a_stale_npy_is_not_used(dataset_copy):
    plain = epoch(dataset_copy)
    epoch(dataset_copy, cache="disk")
    for npy in (dataset_copy.parent / "images" / "train").glob("*.npy"):
        np.save(npy, np.zeros((3, 3, 3), np.uint8))  # wrong content, then made older than its image
        os.utime(npy, (1, 1))
    assert_same(epoch(dataset_copy, cache="disk"), plain)


def test_an_unwritable_cache_warns_naming_the_file_and_decodes(dataset_copy, monkeypatch):
    plain = epoch(dataset_copy)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))
    monkeypatch.setattr(sources.os, "replace", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = epoch(dataset_copy, cache="disk")
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert messages and all("cannot write" in m and ".npy" in m for m in messages)
    assert len(messages) <= 4 < 8  # the process stops trying after a failure (one per in-flight reading thread)
    assert_same(got, plain)
    assert not list(dataset_copy.parent.rglob("*.npy")) and not list(dataset_copy.parent.rglob("*.tmp"))


def test_an_unknown_cache_value_is_a_clear_error(dataset_copy):
    with pytest.raises(ValueError, match="cache='memory'"):
        build_dataset(config(dataset_copy, cache="memory"), "train", 0)


def test_a_ram_cache_written_by_one_process_is_read_by_another_without_decoding(dataset_copy, tmp_path, monkeypatch):
    """`preload` into a named file (and its index), `attach` from a dataset that decodes nothing: the same batches
    as a dataset with its own cache (the way the processes of one host share cache=ram)."""
    path = tmp_path / "shared.u8"
    writer = build_dataset(config(dataset_copy, cache="ram"), "train", 1,
                           preload=lambda store, indices, imgsz, split: store.preload(indices, imgsz, path=path))
    assert path.is_file() and (tmp_path / "shared.u8.index").is_file()

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although another process cached it")
    monkeypatch.setattr(sources, "read_bgr", no_decoding)
    reader = build_dataset(config(dataset_copy, cache="ram"), "train", 1,
                           preload=lambda store, indices, imgsz, split: store.attach(path))
    assert_same(list(reader.iterator(0, workers=0)), list(writer.iterator(0, workers=0)))
    monkeypatch.undo()
    assert_same(list(reader.iterator(0, workers=0)), epoch(dataset_copy))
