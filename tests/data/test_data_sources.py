"""Sources: the embedded shapes dataset, data yaml resolution, and tfds data sources (tfds mock data)."""
import shutil

import numpy as np
import pytest

from yolojax.data import build_dataset
from yolojax.data.shapes import CLASS_NAMES, ensure_shapes_dataset, make_shapes_image
from yolojax.data.sources import (
    NoLabelsError,
    TfdsSource,
    YoloSource,
    label_path_for,
    load_data_yaml,
    tfds_example_to_record,
)


def small_shapes(root, seed):
    return ensure_shapes_dataset(root, seed=seed, num_train=6, num_val=3, imgsz=64)


def test_shapes_dataset_written_by_worker_processes_is_the_same(tmp_path):
    one = small_shapes(tmp_path / "one", 1).parent
    many = ensure_shapes_dataset(tmp_path / "many", seed=1, num_train=6, num_val=3, imgsz=64, workers=2).parent
    files = sorted(p.relative_to(one) for p in one.rglob("*.*") if p.suffix in (".png", ".txt"))
    assert len(files) == 18
    assert all((one / f).read_bytes() == (many / f).read_bytes() for f in files)


def test_shapes_dataset_is_deterministic_by_seed(tmp_path):
    a, b, c = small_shapes(tmp_path / "a", 1), small_shapes(tmp_path / "b", 1), small_shapes(tmp_path / "c", 2)
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*.*") if p.suffix in (".png", ".txt"))
    assert len(files) == 18
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)
    assert any((a.parent / f).read_bytes() != (c.parent / f).read_bytes() for f in files)


def test_shapes_dataset_layout_and_reuse(tmp_path):
    yaml_path = small_shapes(tmp_path / "d", 0)
    data = load_data_yaml(yaml_path)
    assert data["names"] == CLASS_NAMES == ("rectangle", "ellipse", "triangle")
    source = YoloSource(yaml_path, "val")
    assert len(source) == 3 and source.counts["corrupt"] == 0
    stamp = (yaml_path.parent / "images" / "train" / "000000.png").stat().st_mtime_ns
    assert small_shapes(tmp_path / "d", 0) == yaml_path  # second call: nothing regenerated
    assert (yaml_path.parent / "images" / "train" / "000000.png").stat().st_mtime_ns == stamp


def test_shapes_labels_are_tight_around_shapes():
    image, cls, boxes = make_shapes_image(np.random.default_rng(3), imgsz=128, max_objects=6)
    assert image.dtype == np.uint8 and max(image.shape[:2]) == 128
    assert ((cls >= 0) & (cls < 3)).all() and len(cls) == len(boxes)
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all()


def test_label_path_replaces_the_last_images_folder():
    assert label_path_for("/d/images/x/images/train/a.b.jpg") == "/d/images/x/labels/train/a.b.txt"


def test_tfds_example_mapping_by_hand():
    example = {"image": np.zeros((20, 40, 3), np.uint8), "image/id": 7,
               "objects": {"bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.3, 0.9], [0.0, 0.0, 1.0, 1.0]]),
                           "label": np.array([3, 1, 2]), "is_crowd": np.array([False, False, True])}}
    record, image = tfds_example_to_record(example, 0, "coco")
    np.testing.assert_allclose(record["bboxes"], [[0.4, 0.3, 0.4, 0.4]], rtol=1e-6)  # zero-height + crowd dropped
    assert record["cls"].tolist() == [3] and record["image_id"] == 7 and record["ori_shape"] == (20, 40)


def test_tfds_voc_mock_data_through_the_pipeline():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        source = TfdsSource("voc/2007", "train")
        assert len(source) == 8 and len(source.names) == 20
        ds = build_dataset({"imgsz": 64, "batch": 4, "workers": 0}, "train", 0, source=source)
        batch = next(ds.iterator(0))
    assert batch["images"].shape == (4, 64, 64, 3)
    boxes = batch["bboxes"][batch["mask"]]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert ((batch["cls"][batch["mask"]] >= 0) & (batch["cls"][batch["mask"]] < 20)).all()


def shapes_without_labels(shapes_dataset, tmp_path):
    """A copy of a small shapes dataset with its labels/ folder deleted; returns its data yaml."""
    root = tmp_path / "nolabels"
    shutil.copytree(shapes_dataset(8, 4, 64).parent, root)
    shutil.rmtree(root / "labels")
    yaml_path = root / "shapes.yaml"
    text = yaml_path.read_text().splitlines()
    yaml_path.write_text("\n".join([f"path: {root}", *text[1:]]) + "\n")
    return yaml_path


def test_train_split_without_labels_is_a_one_line_error(shapes_dataset, tmp_path):
    yaml_path = shapes_without_labels(shapes_dataset, tmp_path)
    cfg = {"data": str(yaml_path), "imgsz": 64, "batch": 4, "workers": 0}
    with pytest.raises(NoLabelsError) as err:
        build_dataset(cfg, "train")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{yaml_path.parent / 'images' / 'train'}: no labelled images in the train split")
    assert "labels/ folder next to images/" in message and "cls cx cy w h" in message
    assert "allow_background_only=True" in message
    assert isinstance(err.value, ValueError)


def test_background_only_train_split_builds_when_the_user_says_so(shapes_dataset, tmp_path):
    yaml_path = shapes_without_labels(shapes_dataset, tmp_path)
    cfg = {"data": str(yaml_path), "imgsz": 64, "batch": 4, "workers": 0}
    ds = build_dataset({**cfg, "allow_background_only": True}, "train")
    assert ds.num_images == 8 and "0 images with labels, 8 backgrounds" in ds.summary
    batch = next(iter(ds.iterator(0)))
    assert not batch["mask"].any()
    assert build_dataset(cfg, "val").num_images == 4  # val is not checked: a val split may hold no objects
