"""Bad input in YOLO datasets: one test per case, each checks the warning names the file and what was done."""
import warnings

import cv2
import numpy as np
import pytest

from yolojax.data.labels import DataWarning, parse_label_rows, scan_labels
from yolojax.data.sources import NoImagesError, YoloSource

GOOD_ROW = "1 0.5 0.5 0.2 0.4"


def write_dataset(root, labels, *, nc=3, image_size=(48, 64)):
    """images/train/NAME.png + labels/train/NAME.txt for each NAME: text (None: no label file); returns yaml."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for name, text in labels.items():
        cv2.imwrite(str(root / "images" / "train" / f"{name}.png"), np.full((*image_size, 3), 60, np.uint8))
        if text is not None:
            (root / "labels" / "train" / f"{name}.txt").write_text(text)
    names = "".join(f"  {i}: c{i}\n" for i in range(nc))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n{names}")
    return root / "data.yaml"


def scan(root, labels, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = YoloSource(write_dataset(root, labels, **kwargs), "train")
    return source, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_good_labels_parse_by_hand():
    labels, notes = parse_label_rows("0 0.5 0.5 0.2 0.4\n\n2 0.1 0.2 0.1 0.1\n", 3, "x.txt")
    np.testing.assert_allclose(labels, [[0, 0.5, 0.5, 0.2, 0.4], [2, 0.1, 0.2, 0.1, 0.1]], rtol=1e-6)
    assert notes == []


def test_polygon_row_becomes_its_box():
    labels, _ = parse_label_rows("1 0.1 0.2 0.5 0.2 0.5 0.6", 3, "x.txt")
    np.testing.assert_allclose(labels, [[1, 0.3, 0.4, 0.4, 0.4]], rtol=1e-6)


def test_wrong_column_count_skips_image(tmp_path):
    source, msgs = scan(tmp_path, {"a": GOOD_ROW, "b": "1 0.5 0.5 0.2"})
    assert [r["im_file"].endswith("a.png") for r in source.records] == [True]
    assert source.counts["corrupt"] == 1
    assert any("b.txt" in m and "4 columns" in m for m in msgs)


def test_non_numeric_row_skips_image(tmp_path):
    source, msgs = scan(tmp_path, {"a": GOOD_ROW, "b": "cat 0.5 0.5 0.2 0.2"})
    assert len(source) == 1 and any("b.txt" in m and "not numbers" in m for m in msgs)


def test_class_out_of_range_skips_image(tmp_path):
    source, msgs = scan(tmp_path, {"a": GOOD_ROW, "b": "3 0.5 0.5 0.2 0.2"}, nc=3)
    assert len(source) == 1 and source.counts["corrupt"] == 1
    assert any("b.txt" in m and "class id 3" in m for m in msgs)


def test_negative_class_skips_image(tmp_path):
    source, msgs = scan(tmp_path, {"a": GOOD_ROW, "b": "-1 0.5 0.5 0.2 0.2"})
    assert len(source) == 1 and any("b.txt" in m and "class id -1" in m for m in msgs)


def test_coordinates_slightly_out_are_clipped(tmp_path):
    source, msgs = scan(tmp_path, {"a": "0 0.98 0.5 0.06 0.2"})  # x2 = 1.01, row values within [0, 1]
    np.testing.assert_allclose(source.records[0]["bboxes"], [[0.975, 0.5, 0.05, 0.2]], rtol=1e-5)
    source, msgs = scan(tmp_path / "b", {"a": "0 0.5 0.5 0.2 1.02"})  # h > 1 by 0.02: clipped, warned
    assert any("a.txt" in m and "clipped" in m for m in msgs)
    np.testing.assert_allclose(source.records[0]["bboxes"], [[0.5, 0.5, 0.2, 1.0]], rtol=1e-6)


def test_absurd_coordinates_skip_image(tmp_path):
    source, msgs = scan(tmp_path, {"a": GOOD_ROW, "b": "0 320 240 50 60"})  # pixels, not normalized
    assert len(source) == 1 and any("b.txt" in m and "outside [0, 1]" in m for m in msgs)


def test_zero_area_box_is_dropped(tmp_path):
    source, msgs = scan(tmp_path, {"a": "0 0.5 0.5 0.0 0.2\n1 0.5 0.5 0.2 0.2"})
    assert source.records[0]["cls"].tolist() == [1]
    assert any("a.txt" in m and "zero-area" in m for m in msgs)


def test_duplicate_rows_are_removed(tmp_path):
    source, msgs = scan(tmp_path, {"a": f"{GOOD_ROW}\n{GOOD_ROW}\n0 0.2 0.2 0.1 0.1"})
    assert len(source.records[0]["cls"]) == 2
    assert any("a.txt" in m and "1 duplicate" in m for m in msgs)


def test_missing_and_empty_labels_are_backgrounds(tmp_path):
    source, _ = scan(tmp_path, {"a": GOOD_ROW, "b": None, "c": ""})
    assert len(source) == 3
    assert (source.counts["found"], source.counts["missing"], source.counts["empty"]) == (1, 1, 1)
    assert "1 images with labels, 2 backgrounds (1 missing, 1 empty label files), 0 corrupt" in source.summary


def test_unreadable_image_is_skipped(tmp_path):
    write_dataset(tmp_path, {"a": GOOD_ROW, "b": GOOD_ROW})
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"not an image at all")
    with pytest.warns(DataWarning, match=r"b\.png: unreadable image"):
        source = YoloSource(tmp_path / "data.yaml", "train")
    assert len(source) == 1


def test_truncated_png_is_skipped(tmp_path):
    write_dataset(tmp_path, {"a": GOOD_ROW, "b": GOOD_ROW})
    path = tmp_path / "images" / "train" / "b.png"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.warns(DataWarning, match=r"b\.png"):
        source = YoloSource(tmp_path / "data.yaml", "train")
    assert len(source) == 1


def test_truncated_jpeg_is_kept_with_warning(tmp_path):
    write_dataset(tmp_path, {"a": GOOD_ROW})
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    (tmp_path / "images" / "train" / "b.jpg").write_bytes(data[:-2])
    (tmp_path / "labels" / "train" / "b.txt").write_text(GOOD_ROW)
    with pytest.warns(DataWarning, match=r"b\.jpg: truncated JPEG"):
        source = YoloSource(tmp_path / "data.yaml", "train")
    assert len(source) == 2


def test_tiny_image_is_skipped(tmp_path):
    write_dataset(tmp_path, {"a": GOOD_ROW}, image_size=(8, 64))
    with pytest.warns(DataWarning, match=r"a\.png: image size \(8, 64\) is under 10 pixels"):
        with pytest.raises(NoImagesError):
            YoloSource(tmp_path / "data.yaml", "train")


def test_zero_usable_images_is_a_clear_error(tmp_path):
    write_dataset(tmp_path, {"a": "9 0.5 0.5 0.2 0.2"})
    with pytest.warns(DataWarning), pytest.raises(NoImagesError, match="zero usable images"):
        YoloSource(tmp_path / "data.yaml", "train")


def test_empty_folder_is_a_clear_error(tmp_path):
    write_dataset(tmp_path, {})
    with pytest.raises(NoImagesError, match="zero usable images"):
        YoloSource(tmp_path / "data.yaml", "train")


def test_scan_cache_is_reused_and_invalidated(tmp_path):
    yaml_path = write_dataset(tmp_path, {"a": GOOD_ROW, "b": "0 0.5 0.5 0.1 0.1"})
    first = YoloSource(yaml_path, "train")
    cache = tmp_path / "labels" / "train.yolojax.cache"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    again = YoloSource(yaml_path, "train")
    assert cache.stat().st_mtime_ns == stamp  # read, not rewritten
    np.testing.assert_array_equal(again.records[1]["bboxes"], first.records[1]["bboxes"])
    (tmp_path / "labels" / "train" / "b.txt").write_text("2 0.5 0.5 0.3 0.3\n")
    with pytest.warns(DataWarning, match=r"train\.yolojax\.cache: label cache ignored \(stale"):
        changed = YoloSource(yaml_path, "train")
    assert changed.records[1]["cls"].tolist() == [2]


def test_scan_labels_counts_corrupt(tmp_path):
    with pytest.warns(DataWarning, match=r"nope\.png: unreadable image"):
        records, counts, _ = scan_labels([str(tmp_path / "nope.png")], [str(tmp_path / "nope.txt")], 3)
    assert records == [] and counts["corrupt"] == 1 and counts["total"] == 1
