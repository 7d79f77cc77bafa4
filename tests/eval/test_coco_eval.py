"""`yolojax.eval.coco_eval` against pycocotools' COCOeval('bbox') on random JSON files, and its bad-input errors."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from yolojax.eval import coco_eval

SUMMARY_KEYS = ("map50_95", "map50", "map75", "map_small", "map_medium", "map_large", "ar1", "ar10", "ar100",
                "ar_small", "ar_medium", "ar_large")


def random_coco(rng, *, num_images=50, num_cats=6, ties=False):
    """COCO ground truth and results: varied sizes (all three area ranges), ~8% crowd boxes, images without
    ground truth or without detections, detections on categories unknown to the ground truth, and (with `ties`)
    integer boxes and scores rounded to 2 decimals with over 100 detections per image and category."""
    images = [dict(id=int(i)) for i in rng.choice(100000, num_images, replace=False)]
    cats = [dict(id=int(c)) for c in rng.choice(90, num_cats, replace=False) + 1]
    anns, dets = [], []
    for im in images:
        objects = []
        for _ in range(0 if rng.random() < 0.15 else int(rng.integers(1, 15))):
            w, h = np.exp(rng.uniform(np.log(3), np.log(300), 2))
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = cats[rng.integers(num_cats)]["id"]
            box = [float(round(v)) if ties else float(v) for v in (x, y, w, h)]
            anns.append(dict(id=len(anns) + 1, image_id=im["id"], category_id=cat, bbox=box,
                             area=float(w * h * rng.uniform(0.4, 1.0)), iscrowd=int(rng.random() < 0.08)))
            objects.append((box, cat))
        if rng.random() < 0.15:
            continue
        for _ in range(int(rng.integers(0, 250 if ties else 40))):
            if objects and rng.random() < 0.7:
                (x, y, w, h), cat = objects[rng.integers(len(objects))]
                j = rng.normal(0, 0.1, 4)
                box = [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])]
                cat = cat if rng.random() < 0.85 else int(rng.integers(1, 92))
            else:
                w, h = np.exp(rng.uniform(np.log(3), np.log(300), 2))
                box, cat = [rng.uniform(0, 600), rng.uniform(0, 440), w, h], cats[rng.integers(num_cats)]["id"]
            score = round(float(rng.random()), 2) if ties else float(rng.random())
            dets.append(dict(image_id=im["id"], category_id=int(cat),
                             bbox=[float(round(v)) if ties else float(v) for v in box], score=score))
    return dict(images=images, categories=cats, annotations=anns), dets


def write(tmp_path, gt, dets):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    return str(tmp_path / "gt.json"), str(tmp_path / "dt.json")


def pycocotools_stats(gt_path, dt_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        e = COCOeval(gt, gt.loadRes(dt_path), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    return e.stats


@pytest.mark.parity
@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True)])
def test_equals_pycocotools(tmp_path, seed, ties):
    pytest.importorskip("pycocotools")
    gt, dets = random_coco(np.random.default_rng(seed), ties=ties)
    paths = write(tmp_path, gt, dets)
    ours = coco_eval(*paths)
    ref = pycocotools_stats(*paths)
    np.testing.assert_allclose([ours[k] for k in SUMMARY_KEYS], ref, atol=1e-4)
    assert ref[0] > 0.05  # enough true positives for the comparison to mean something


def test_perfect_detections_score_one_and_crowd_is_ignored(tmp_path):
    gt = dict(images=[dict(id=1), dict(id=2)], categories=[dict(id=1)], annotations=[
        dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 50, 50], area=2500, iscrowd=0),
        dict(id=2, image_id=2, category_id=1, bbox=[0, 0, 300, 300], area=90000, iscrowd=1)])
    dets = [dict(image_id=1, category_id=1, bbox=[10, 10, 50, 50], score=0.9),
            dict(image_id=2, category_id=1, bbox=[20, 20, 40, 40], score=0.95)]  # inside the crowd: not an FP
    ours = coco_eval(*write(tmp_path, gt, dets))
    assert ours["map50_95"] == pytest.approx(1.0, abs=1e-12)  # pycocotools adds eps to the precision denominator
    assert ours["map_medium"] == pytest.approx(1.0, abs=1e-12)
    assert ours["map_small"] == -1.0  # no small ground truth: undefined, as pycocotools reports it


def test_no_detections_score_zero(tmp_path):
    gt = dict(images=[dict(id=1)], categories=[dict(id=1)],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 50, 50], area=2500, iscrowd=0)])
    assert coco_eval(*write(tmp_path, gt, []))["map50"] == 0.0


def test_bad_inputs_name_the_file(tmp_path):
    gt = dict(images=[dict(id=1)], categories=[dict(id=1)],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 50, 50], iscrowd=0)])
    gt_path, dt_path = write(tmp_path, gt, [dict(image_id=7, category_id=1, bbox=[0, 0, 1, 1], score=0.5)])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_eval(str(tmp_path / "missing.json"), dt_path)
    with pytest.warns(UserWarning, match="gt.json: 1 annotations have no 'area'"), \
            pytest.raises(ValueError, match="dt.json: 1 detected image ids are not in the ground truth"):
        coco_eval(gt_path, dt_path)
    (tmp_path / "dt.json").write_text(json.dumps([dict(image_id=1, category_id=1, bbox=[0, 0, 1], score=0.5)]))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="dt.json: record 0 has no 4-number 'bbox'"):
        coco_eval(gt_path, dt_path)
    (tmp_path / "dt.json").write_text("{not json")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="dt.json: not valid JSON"):
        coco_eval(gt_path, dt_path)
