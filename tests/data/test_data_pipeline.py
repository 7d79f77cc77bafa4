"""build_dataset: geometry of augmented boxes vs pixels, determinism, resume, val metadata, sources, bad input."""
import json

import cv2
import numpy as np
import pytest

from yolojax.data import build_dataset
from yolojax.data.labels import DataWarning
from yolojax.data.pipeline import rect_val_plan
from yolojax.data.sources import CocoSource

BACKGROUND = np.array([40, 40, 40])
NUM_RECTS = 24


def rect_colour(k):
    """Distinct BGR colours, far from the background (40) and from the padding grey (114)."""
    palette = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230)]
    base = np.array(palette[k % 6])
    return np.clip(base + 8 * (k // 6) * np.sign(114 - base), 0, 255)


def write_rectangles_dataset(root, num_images=8, seed=0):
    """Images of solid rectangles on a flat background; rectangle k has class k and colour rect_colour(k)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    k = 0
    for i in range(num_images):
        h, w = int(rng.integers(70, 97)), int(rng.integers(70, 97))
        image = np.zeros((h, w, 3), np.uint8) + BACKGROUND.astype(np.uint8)
        rows = []
        for j in range(3):  # three side-by-side columns: no overlaps
            x1 = int(j * w / 3 + rng.integers(1, 4))
            x2 = int((j + 1) * w / 3 - rng.integers(1, 4))
            y1 = int(rng.integers(1, h // 2))
            y2 = int(rng.integers(y1 + 12, h))
            image[y1:y2, x1:x2] = rect_colour(k)
            rows.append(f"{k} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}")
            k += 1
        for split in ("train", "val"):
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), image)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(rows))
    names = "".join(f"  {c}: r{c}\n" for c in range(k))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"


def pixel_box(image_rgb, colour_bgr, box):
    """Bounding box (xyxy, pixel edges) of the connected component of `colour` best matching `box`, or None."""
    colour = np.asarray(colour_bgr, float)[::-1]
    near = np.linalg.norm(image_rgb.astype(float) - colour, axis=-1) < 0.5 * np.linalg.norm(colour - BACKGROUND)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(near.astype(np.uint8))
    best, best_iou = None, -1.0
    for c in range(1, count):
        x, y, w, h = stats[c, :4]
        cand = np.array([x, y, x + w, y + h], float)
        iou = box_iou(cand, box)
        if iou > best_iou:
            best, best_iou = cand, iou
    return best


def box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def batch_boxes(batch, i, size):
    b = batch["bboxes"][i][batch["mask"][i]] * size
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    return xyxy, batch["cls"][i][batch["mask"][i]]


GEOMETRY_CFG = dict(imgsz=128, batch=4, workers=0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, flipud=0.5, fliplr=0.5,
                    mosaic=1.0, mixup=0.0)


@pytest.mark.parametrize("mosaic,rotate,mosaic9", [(True, True, False), (True, False, False), (False, True, False),
                                                    (True, False, True)])
def test_augmented_boxes_bound_their_rectangles(tmp_path, mosaic, rotate, mosaic9):
    """Every kept box is within 1.5 px of its rectangle's pixels (IoU >= 0.9 from 16 px up). With rotation, boxes
    cut by the image edge are skipped: the box of a clipped rotated rectangle is looser by design."""
    cfg = dict(GEOMETRY_CFG, degrees=10.0 if rotate else 0.0, shear=3.0 if rotate else 0.0, mosaic9=mosaic9)
    ds = build_dataset({"data": write_rectangles_dataset(tmp_path), **cfg}, "train", seed=1)
    s = ds.imgsz
    deviations, ious = [], []
    for epoch in range(3):
        for batch in ds.iterator(epoch, mosaic=mosaic):
            for i in range(len(batch["images"])):
                boxes, classes = batch_boxes(batch, i, s)
                for box, c in zip(boxes, classes):
                    found = pixel_box(batch["images"][i], rect_colour(int(c)), box)
                    assert found is not None, f"class {c}: box {box} has no pixels of its rectangle"
                    if rotate and (box[:2].min() < 1 or box[2:].max() > s - 1):
                        continue
                    deviations.append(np.abs(found - box).max())
                    if min(box[2] - box[0], box[3] - box[1]) >= 16:
                        ious.append(box_iou(found, box))
    assert len(deviations) > 30 and len(ious) > 15
    assert max(deviations) <= 1.5, f"worst edge deviation {max(deviations):.2f} px"
    assert min(ious) >= 0.9, f"worst IoU {min(ious):.3f}"


def test_val_letterboxed_boxes_bound_their_rectangles(tmp_path):
    ds = build_dataset({"data": write_rectangles_dataset(tmp_path), "imgsz": 160, "batch": 3}, "val", 0)
    for batch in ds.iterator(0, workers=0):
        for i in np.flatnonzero(batch["valid"]):
            boxes, classes = batch_boxes(batch, i, 160)
            assert len(boxes) == 3
            for box, c in zip(boxes, classes):
                assert box_iou(pixel_box(batch["images"][i], rect_colour(int(c)), box), box) >= 0.9


def test_rect_val_plan_by_hand():
    order, shapes = rect_val_plan([(480, 640), (640, 480), (500, 500), (300, 600)], 2, 640)
    assert order.tolist() == [3, 0, 2, 1]  # aspect h/w 0.5, 0.75 | 1.0, 1.33
    assert shapes.tolist() == [[512, 672], [672, 672]]  # ceil(0.75 * 20 + 0.5) * 32, ceil(20.5) * 32


@pytest.mark.parametrize("rect", [False, True])
def test_val_metadata_maps_boxes_back_to_the_original(tmp_path, rect):
    ds = build_dataset({"data": write_rectangles_dataset(tmp_path, num_images=7), "imgsz": 160, "batch": 3,
                        "rect": rect}, "val", 0)
    batches = list(ds.iterator(0, workers=0))
    assert ds.num_batches == len(batches) == 3
    assert batches[-1]["valid"].tolist() == [True, False, False]
    assert not batches[-1]["mask"][1:].any()
    if rect:
        _, shapes = rect_val_plan([ds.source.record(i)["ori_shape"] for i in range(7)], 3, 160)
        assert [b["images"].shape[1:3] for b in batches] == [tuple(s) for s in shapes]
    seen = []
    for batch in batches:
        h, w = batch["images"].shape[1:3]
        for i in np.flatnonzero(batch["valid"]):
            seen.append(batch["image_id"][i])
            boxes, _ = batch_boxes(batch, i, np.array([w, h, w, h]))
            ratio, pad = batch["ratio"][i], batch["pad"][i]
            back = (boxes - np.tile(pad, 2)) / np.tile(ratio, 2)
            np.testing.assert_allclose(back, batch["gt_bboxes"][i], atol=1.0)  # pad rounding: < 1 px
            h0, w0 = cv2.imread(batch["im_file"][i]).shape[:2]
            assert tuple(batch["ori_shape"][i]) == (h0, w0)
    assert sorted(seen) == list(range(7))


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
    for x, y in zip(a, b):
        for key in ("images", "bboxes", "cls", "mask"):
            np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture(scope="module")
def shapes_yaml(shapes_dataset):
    return shapes_dataset(24, 6, 96)


def shapes_cfg(shapes_yaml, **kw):
    return {"data": str(shapes_yaml), "imgsz": 96, "batch": 4, "workers": 0, "mixup": 0.5, "degrees": 5.0, **kw}


def test_same_seed_same_batches_different_seed_differs(shapes_yaml):
    first = take(build_dataset(shapes_cfg(shapes_yaml), "train", 7).iterator(2), 3)
    second = take(build_dataset(shapes_cfg(shapes_yaml), "train", 7).iterator(2), 3)
    assert_batches_equal(first, second)
    other = take(build_dataset(shapes_cfg(shapes_yaml), "train", 8).iterator(2), 3)
    assert not np.array_equal(first[0]["images"], other[0]["images"])
    next_epoch = take(build_dataset(shapes_cfg(shapes_yaml), "train", 7).iterator(3), 3)
    assert not np.array_equal(first[0]["images"], next_epoch[0]["images"])


def test_batches_do_not_depend_on_worker_or_thread_count_or_cache(shapes_yaml):
    ds = build_dataset(shapes_cfg(shapes_yaml), "train", 3)
    serial = list(ds.iterator(0, workers=0, threads=1))
    threaded = list(ds.iterator(0, workers=0, threads=8))
    cached = build_dataset(shapes_cfg(shapes_yaml, cache="ram"), "train", 3)  # preloaded cache travels to workers
    iterator = cached.iterator(0, workers=2)
    parallel = list(iterator)
    iterator.close()
    assert len(serial) == len(parallel) == ds.num_batches == 6
    assert_batches_equal(serial, threaded)
    assert_batches_equal(serial, parallel)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_iterator_state_continues_exactly(shapes_yaml, workers):
    ds = build_dataset(shapes_cfg(shapes_yaml), "train", 5)
    iterator = ds.iterator(1, workers=workers)
    take(iterator, 2)
    state = iterator.get_state()
    expected = take(iterator, 2)
    iterator.close()
    resumed = ds.iterator(1, workers=workers)
    resumed.set_state(state)
    got = take(resumed, 2)
    resumed.close()
    assert_batches_equal(expected, got)


@pytest.mark.parametrize("workers", [0, 2])
def test_one_iterator_across_epochs_gives_each_epochs_batches(shapes_yaml, workers):
    ds = build_dataset(shapes_cfg(shapes_yaml, epochs=3, close_mosaic=1), "train", 5)  # epoch 2: mosaic off
    per_epoch = list(ds.iterator(1, workers=0)) + list(ds.iterator(2, workers=0))
    assert not np.array_equal(per_epoch[0]["images"], per_epoch[ds.num_batches]["images"])
    spanning = ds.iterator(1, workers=workers, epochs=2)
    whole = list(spanning)
    spanning.close()
    assert len(whole) == len(per_epoch) == 2 * ds.num_batches
    assert_batches_equal(per_epoch, whole)
    late = ds.iterator(1, workers=0, start_batch=4, epochs=2)  # from batch 4 of epoch 1: the same batches
    tail = list(late)
    assert len(tail) == len(per_epoch) - 4
    assert_batches_equal(per_epoch[4:], tail)


def test_close_mosaic_turns_mosaic_off_for_the_last_epochs(shapes_yaml):
    ds = build_dataset(shapes_cfg(shapes_yaml, epochs=10, close_mosaic=3), "train", 0)
    assert [ds.mosaic_enabled(e) for e in range(10)] == [True] * 7 + [False] * 3


def test_multi_scale_buckets_are_stride_multiples(shapes_yaml):
    ds = build_dataset(shapes_cfg(shapes_yaml, imgsz=640, multi_scale=True), "train", 0)
    assert ds.size_buckets == (320, 480, 640, 800, 960)
    batch = next(ds.iterator(0, imgsz=96))
    assert batch["images"].shape == (4, 96, 96, 3)


def test_train_batch_shapes_and_dtypes(shapes_yaml):
    batch = next(build_dataset(shapes_cfg(shapes_yaml, max_boxes=60), "train", 0).iterator(0))
    assert batch["images"].shape == (4, 96, 96, 3) and batch["images"].dtype == np.uint8
    assert batch["bboxes"].shape == (4, 60, 4) and batch["bboxes"].dtype == np.float32
    assert batch["cls"].dtype == np.int32 and batch["mask"].dtype == bool
    valid = batch["bboxes"][batch["mask"]]
    assert (valid >= 0).all() and (valid <= 1).all()


def test_more_boxes_than_max_boxes_warns_with_file(tmp_path):
    yaml_path = write_rectangles_dataset(tmp_path, num_images=4)
    ds = build_dataset({"data": yaml_path, "imgsz": 96, "batch": 4, "workers": 0, "max_boxes": 2}, "train", 0)
    with pytest.warns(DataWarning, match=r"images/train/\d\.png: \d+ boxes after augmentation, more than max_boxes=2"):
        batch = next(ds.iterator(0))
    assert batch["mask"].sum(1).max() == 2


def test_image_unreadable_mid_epoch_gives_blank_sample(tmp_path):
    yaml_path = write_rectangles_dataset(tmp_path, num_images=4)
    ds = build_dataset({"data": yaml_path, "imgsz": 96, "batch": 4, "workers": 0}, "train", 0)
    (tmp_path / "images" / "train" / "2.png").write_bytes(b"")
    with pytest.warns(DataWarning, match=r"2\.png: image could not be decoded"):
        batches = list(ds.iterator(0, mosaic=False))
    assert len(batches) == 1


def test_coco_json_source(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((50, 100, 3), 90, np.uint8))
    coco = {"images": [{"id": 11, "file_name": "0.jpg", "height": 50, "width": 100},
                       {"id": 12, "file_name": "1.jpg", "height": 50, "width": 100},
                       {"id": 13, "file_name": "missing.jpg", "height": 50, "width": 100}],
            "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 11, "category_id": 5, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                            {"id": 2, "image_id": 11, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1},
                            {"id": 3, "image_id": 11, "category_id": 2, "bbox": [60, 0, 0, 10], "iscrowd": 0}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    with pytest.warns(DataWarning, match=r"missing\.jpg: unreadable image"):
        source = CocoSource(tmp_path / "instances.json", tmp_path)
    assert source.names == ("dog", "cat") and len(source) == 2
    first = source.record(0)
    assert first["image_id"] == 11 and first["cls"].tolist() == [1]  # crowd and zero-width dropped
    np.testing.assert_allclose(first["bboxes"], [[0.2, 0.2, 0.2, 0.2]], rtol=1e-6)
    assert len(source.record(1)["cls"]) == 0


def test_data_yaml_can_generate_the_shapes_dataset(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text(f"generate: shapes\nroot: {tmp_path / 'gen'}\nseed: 4\nnum_train: 5\nnum_val: 2\nimgsz: 64\n")
    ds = build_dataset({"data": str(spec), "imgsz": 64, "batch": 2}, "val", 0)
    assert ds.num_images == 2 and ds.names == ("rectangle", "ellipse", "triangle")
    assert (tmp_path / "gen" / "shapes.yaml").is_file()


def test_unknown_data_name_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="data='nope': no data yaml .*known names: .*shapes"):
        build_dataset({"data": "nope"}, "train", 0)


def test_fraction_keeps_the_first_images(shapes_yaml):
    ds = build_dataset(shapes_cfg(shapes_yaml, fraction=0.5), "train", 0)
    assert ds.num_images == 12 and ds.num_batches == 3
    assert set(ds.epoch_order(0)) == set(range(12))


def test_mixup_stage_blends_with_beta_ratio_and_concatenates_labels(shapes_yaml):
    from yolojax.data import augment as A
    from yolojax.data import transforms as T

    ds = build_dataset(shapes_cfg(shapes_yaml, mixup=1.0), "train", 0)
    load, warp, mixup = A.train_transforms(ds.store, ds.augment)[:3]
    el = {"index": 3, "pool": np.arange(8), "seed_key": (0, 0, 3), "imgsz": 96, "mosaic_on": True}
    main = warp.map(load.map(el))
    mixed = mixup.map(main)
    rng = A.stage_rng(el["seed_key"], A.STAGE_MIXUP)
    assert rng.random() < 1.0
    partner_el = dict(el, index=int(rng.choice(el["pool"])), seed_key=(0, 0, 3, A.MIXUP_PARTNER))
    partner = warp.map(load.map(partner_el), flips=main["flipped"])
    ratio = rng.beta(32.0, 32.0)
    np.testing.assert_array_equal(mixed["img"], T.mixup_images(main["img"], partner["img"], ratio))
    assert mixed["cls"].tolist() == main["cls"].tolist() + partner["cls"].tolist()
    assert len(mixed["boxes"]) == len(main["boxes"]) + len(partner["boxes"])


def test_preview_grid_draws_every_image(shapes_yaml, tmp_path):
    from yolojax.cli.data import cli_main

    out = tmp_path / "grid.png"
    assert cli_main(["preview", f"data={shapes_yaml}", "imgsz=96", "batch=4", f"out={out}"]) == 0
    grid = cv2.imread(str(out))
    assert grid.shape == (192, 192, 3)  # 2 x 2 tiles of 96 px


def test_data_yaml_with_coco_json_split(tmp_path):
    (tmp_path / "imgs").mkdir()
    images, annotations = [], []
    for i in range(4):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), np.full((60, 80, 3), 50, np.uint8))
        images.append({"id": 100 + i, "file_name": f"{i}.png", "height": 60, "width": 80})
        annotations.append({"id": i, "image_id": 100 + i, "category_id": 1, "bbox": [8, 6, 40, 30], "iscrowd": 0})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: imgs\nval: imgs\nval_json: ann.json\n"
                                        "names:\n  0: thing\n")
    ds = build_dataset({"data": str(tmp_path / "data.yaml"), "imgsz": 64, "batch": 4}, "val", 0)
    batch = next(ds.iterator(0, workers=0))
    assert sorted(batch["image_id"].tolist()) == [100, 101, 102, 103]
    np.testing.assert_allclose(batch["gt_bboxes"][0], [[8, 6, 48, 36]], atol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("rect", [False, True])
def test_val_batches_match_the_reference_dataset(shapes_yaml, rect):
    """Val preprocessing end to end (long-side resize, letterbox without upscaling, RGB; rect batch shapes) gives
    the reference YOLODataset's pixels and normalized boxes exactly."""
    pytest.importorskip("ultralytics")
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    ds = build_dataset({"data": str(shapes_yaml), "imgsz": 64, "batch": 4, "rect": rect}, "val", 0)
    ref = YOLODataset(img_path=str(shapes_yaml.parent / "images" / "val"), imgsz=64, batch_size=4, augment=False,
                      rect=rect, hyp=get_cfg(), data={"names": dict(enumerate(ds.names)), "nc": 3, "channels": 3},
                      pad=0.5, stride=32)
    theirs = {item["im_file"]: item for item in (ref[i] for i in range(len(ref)))}
    for batch in ds.iterator(0, workers=0):
        for i in np.flatnonzero(batch["valid"]):
            item = theirs[batch["im_file"][i]]
            np.testing.assert_array_equal(batch["images"][i], item["img"].numpy().transpose(1, 2, 0))
            mask = batch["mask"][i]
            np.testing.assert_allclose(batch["bboxes"][i][mask], item["bboxes"].numpy(), atol=1e-5)
            assert batch["cls"][i][mask].tolist() == item["cls"].numpy().reshape(-1).astype(int).tolist()


def test_collate_writes_bgra_images_as_bgr_and_stacks_the_rest():
    from yolojax.data.batching import collate

    rng = np.random.default_rng(0)
    bgra = [rng.integers(0, 256, (32, 48, 4), np.uint8) for _ in range(2)]
    bgr = rng.integers(0, 256, (32, 48, 3), np.uint8)
    elements = [{"images": im, "bboxes": np.full((5, 4), k, np.float32), "cls": np.arange(5, dtype=np.int32),
                 "mask": np.ones(5, bool), "hsv_lut": np.full((256, 3), k, np.uint8)}
                for k, im in enumerate([bgra[0], bgr, bgra[1]])]
    batch = collate(elements)
    assert batch["images"].shape == (3, 32, 48, 3) and batch["images"].dtype == np.uint8
    np.testing.assert_array_equal(batch["images"][0], cv2.cvtColor(bgra[0], cv2.COLOR_BGRA2BGR))
    np.testing.assert_array_equal(batch["images"][1], bgr)
    np.testing.assert_array_equal(batch["images"][2], bgra[1][..., :3])
    assert batch["bboxes"].shape == (3, 5, 4) and batch["bboxes"][2, 0, 0] == 2
    assert batch["hsv_lut"].shape == (3, 256, 3) and sorted(batch) == ["bboxes", "cls", "hsv_lut", "images", "mask"]


def test_ram_cache_is_one_shared_file_not_copied_into_workers(shapes_yaml):
    import gc
    import os
    import pickle

    ds = build_dataset(shapes_cfg(shapes_yaml, cache="ram"), "train", 3)
    store = ds.store
    path = store._shared_path
    assert os.path.getsize(path) == sum(int(np.prod(v[1])) for v in store._shared_index.values())
    assert len(pickle.dumps(store)) < os.path.getsize(path) / 4  # the pixels stay in the file
    worker_copy = pickle.loads(pickle.dumps(store))
    image, *_ = worker_copy.get(0, ds.imgsz)
    np.testing.assert_array_equal(image, store.get(0, ds.imgsz)[0])
    del ds, store, worker_copy, image
    gc.collect()
    assert not os.path.exists(path)
