"""The label cache is plain data: read without unpickling, and rebuilt (with a warning naming the file and the reason)
when it is a pickle, foreign, another version or stale."""
import io
import pickle
import warnings

import cv2
import numpy as np
import pytest

from yolojax.data import labels
from yolojax.data.labels import DataWarning, read_label_cache, write_label_cache
from yolojax.data.sources import YoloSource


def write_dataset(root):
    """Three images: two labelled, one without a label file; returns the data yaml."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for name in ("1", "b", "c"):
        cv2.imwrite(str(root / "images" / "train" / f"{name}.png"), np.full((40, 56, 3), 90, np.uint8))
    (root / "labels" / "train" / "1.txt").write_text("0 0.5 0.5 0.2 0.4\n2 0.25 0.25 0.1 0.1\n")
    (root / "labels" / "train" / "b.txt").write_text("1 0.5 0.5 0.3 0.3\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames: [a, b, c]\n")
    return root / "data.yaml", root / "labels" / "train.yolojax.cache"


def load(yaml_path):
    """(source, messages of the DataWarnings raised while building it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = YoloSource(yaml_path, "train")
    return source, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def assert_same_records(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x["im_file"], tuple(x["ori_shape"]), x["image_id"]) == (y["im_file"], tuple(y["ori_shape"]),
                                                                       y["image_id"])
        assert x["cls"].dtype == y["cls"].dtype == np.int32 and x["bboxes"].dtype == y["bboxes"].dtype == np.float32
        np.testing.assert_array_equal(x["cls"], y["cls"])
        np.testing.assert_array_equal(x["bboxes"], y["bboxes"])


def test_cache_round_trip_gives_the_same_labels(tmp_path):
    yaml_path, cache = write_dataset(tmp_path)
    first, _ = load(yaml_path)
    stamp = cache.stat().st_mtime_ns
    again, messages = load(yaml_path)
    assert cache.stat().st_mtime_ns == stamp and messages == []  # read as is, no warning
    assert_same_records(again.records, first.records)
    assert again.counts == first.counts and again.summary == first.summary
    assert [r["image_id"] for r in again.records] == [1, "b", "c"]  # numeric stems stay ints, others text
    assert again.records[2]["bboxes"].shape == (0, 4)


def test_cache_file_is_an_npz_of_plain_arrays():
    cached = {"key": "k", "counts": {"found": 0, "missing": 0, "empty": 0, "corrupt": 0, "total": 0},
              "messages": [], "records": []}
    f = io.BytesIO()
    write_label_cache(f, cached)
    f.seek(0)
    with np.load(f, allow_pickle=False) as z:  # no object arrays, so it loads without pickle
        assert sorted(z.files) == ["bboxes", "cls", "meta", "sizes"]


class _WritesMarker:
    """Unpickling this creates the file `path` (what a malicious cache could do with any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_planted_pickle_is_never_executed_and_the_labels_are_rebuilt(tmp_path):
    yaml_path, cache = write_dataset(tmp_path)
    expected, _ = load(yaml_path)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_WritesMarker(probe))).close()
    assert probe.is_file()  # the payload is live: loading it with pickle would run it
    marker = tmp_path / "marker"
    cache.write_bytes(pickle.dumps({"key": "x", "payload": _WritesMarker(marker)}, protocol=pickle.HIGHEST_PROTOCOL))
    source, messages = load(yaml_path)
    assert not marker.exists()
    assert any(str(cache) in m and "pickle" in m and "rescanning" in m for m in messages), messages
    assert_same_records(source.records, expected.records)
    assert read_label_cache(cache)["key"]  # rewritten in the plain format
    load(yaml_path)
    assert not marker.exists()


@pytest.mark.parametrize("content, reason", [
    (b"cls cx cy w h\n", "not a yolojax label cache"),
    (b"PK\x03\x04 truncated", "damaged"),
])
def test_foreign_or_damaged_cache_is_rebuilt_with_a_warning(tmp_path, content, reason):
    yaml_path, cache = write_dataset(tmp_path)
    expected, _ = load(yaml_path)
    cache.write_bytes(content)
    source, messages = load(yaml_path)
    assert any(str(cache) in m and reason in m for m in messages), messages
    assert_same_records(source.records, expected.records)


def test_other_version_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    yaml_path, cache = write_dataset(tmp_path)
    monkeypatch.setattr(labels, "CACHE_VERSION", 1)
    load(yaml_path)
    monkeypatch.undo()
    _, messages = load(yaml_path)
    assert any(str(cache) in m and "version 1" in m for m in messages), messages
    assert read_label_cache(cache)["records"]


def test_stale_cache_is_rebuilt(tmp_path):
    yaml_path, cache = write_dataset(tmp_path)
    load(yaml_path)
    (tmp_path / "labels" / "train" / "b.txt").write_text("2 0.5 0.5 0.3 0.3\n0 0.1 0.1 0.1 0.1\n")
    source, messages = load(yaml_path)
    assert any(str(cache) in m and "stale" in m for m in messages), messages
    assert source.records[1]["cls"].tolist() == [2, 0]
    _, messages = load(yaml_path)
    assert messages == []  # the rebuilt cache matches
