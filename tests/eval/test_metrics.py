"""Device matching (both rule sets), host AP and the confusion matrix: hand computations and the reference."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from yolojax.eval import confusion, metrics

NUM_CLASSES = 4


def random_image(rng, max_gt=15, max_det=60, num_classes=NUM_CLASSES):
    """Ground truth and noisy, score-sorted detections of one image (xyxy pixels, float32)."""
    g, d = int(rng.integers(1, max_gt + 1)), int(rng.integers(1, max_det + 1))
    xy = rng.uniform(0, 400, (g, 2))
    gt = np.concatenate([xy, xy + rng.uniform(5, 200, (g, 2))], 1).astype(np.float32)
    src = rng.integers(0, g, d)
    det = (gt[src] + rng.normal(0, 8, (d, 4))).astype(np.float32)
    det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
    gt_cls = rng.integers(0, num_classes, g).astype(np.int32)
    det_cls = np.where(rng.random(d) < 0.8, gt_cls[src], rng.integers(0, num_classes, d)).astype(np.int32)
    scores = np.sort(rng.random(d).astype(np.float32))[::-1].copy()
    return gt, gt_cls, det, det_cls, scores


def pad(a, n, fill=0):
    return np.concatenate([a, np.full((n - len(a),) + a.shape[1:], fill, a.dtype)])


_match_ultralytics = jax.jit(metrics.match_ultralytics)
_match_coco = jax.jit(metrics.match_coco)
_confusion_counts = jax.jit(confusion.confusion_counts, static_argnames=("num_classes",))


def ours_correct(gt, gt_cls, det, det_cls, g_pad=16, d_pad=64):
    ones = lambda n: np.ones(n, bool)  # noqa: E731
    out = _match_ultralytics(pad(det, d_pad), pad(det_cls, d_pad), pad(ones(len(det)), d_pad), pad(gt, g_pad),
                             pad(gt_cls, g_pad), pad(ones(len(gt)), g_pad))
    return np.asarray(out)[:len(det)]


# ---------------------------------------------------------------------------------------- ultralytics matching
def test_label_goes_to_the_lowest_index_detection_and_the_loser_stays_false():
    # det0 overlaps A at IoU 0.6; det1 overlaps A at 0.9 and B at 0.55. Both propose A; det0 (higher confidence)
    # takes it and det1 does not fall back to B: the reference's rule.
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 9 / 0.55]], np.float32)
    det = np.array([[0, 0, 10, 6], [0, 0, 10, 9]], np.float32)
    correct = ours_correct(gt, np.zeros(2, np.int32), det, np.zeros(2, np.int32))
    np.testing.assert_array_equal(correct[:, 0], [True, False])  # t = 0.50
    np.testing.assert_array_equal(correct[:, 3], [False, True])  # t = 0.65: det0's 0.6 no longer counts


def test_wrong_class_never_matches():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    correct = ours_correct(gt, np.array([1], np.int32), gt.copy(), np.array([2], np.int32))
    assert not correct.any()


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_equals_reference_match_predictions(seed):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import box_iou

    validator = DetectionValidator.__new__(DetectionValidator)
    validator.iouv = torch.linspace(0.5, 0.95, 10)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        gt, gt_cls, det, det_cls, _ = random_image(rng)
        ref = validator.match_predictions(torch.tensor(det_cls).float(), torch.tensor(gt_cls).float(),
                                          box_iou(torch.tensor(gt), torch.tensor(det))).numpy()
        np.testing.assert_array_equal(ours_correct(gt, gt_cls, det, det_cls), ref)


# ------------------------------------------------------------------------------------------ ultralytics AP
def reference_stats(seed, images=40):
    rng = np.random.default_rng(seed)
    parts = [[], [], [], []]
    for _ in range(images):
        gt, gt_cls, det, det_cls, scores = random_image(rng)
        for part, value in zip(parts, (ours_correct(gt, gt_cls, det, det_cls), scores, det_cls, gt_cls)):
            part.append(value)
    return [np.concatenate(p) for p in parts]


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1])
def test_ap_per_class_equals_reference(seed):
    pytest.importorskip("ultralytics")
    from ultralytics.utils.metrics import Metric, ap_per_class

    tp, conf, pred_cls, target_cls = reference_stats(seed)
    ref = ap_per_class(tp, conf, pred_cls, target_cls)
    ours = metrics.ap_per_class(tp, conf, pred_cls, target_cls)
    for k, name in ((2, "p"), (3, "r"), (4, "f1"), (5, "ap"), (7, "p_curve"), (8, "r_curve"), (9, "f1_curve")):
        np.testing.assert_allclose(ours[name], ref[k], atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(ours["classes"], ref[6])
    np.testing.assert_array_equal(ours["tp"], ref[0])
    metric = Metric()
    metric.update(ref[2:])
    summary = metrics.ultralytics_summary(ours)
    np.testing.assert_allclose([summary[k] for k in ("precision", "recall", "map50", "map50_95", "map75")],
                               [*metric.mean_results(), metric.map75], atol=1e-6)


def test_perfect_detections_give_the_reference_0995_and_false_ones_zero():
    # The sentinel (recall 1, precision 0) shares recall 1 with the last real point, so the last of the 100
    # trapezoids falls from 1 to 0: a perfect detector scores 1 - 0.01 / 2 = 0.995 under these rules.
    tp = np.ones((3, 10), bool)
    ours = metrics.ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.zeros(3))
    np.testing.assert_allclose(ours["ap"], 0.995, atol=1e-12)
    ours = metrics.ap_per_class(~tp, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.zeros(3))
    np.testing.assert_allclose(ours["ap"], 0.0)


def test_interpolated_ap_hand_value():
    # Precision 1 at recall 0.5, then only the sentinel (1, 0): the envelope is 1 on [0, 0.5] and falls linearly
    # to 0 at recall 1, so the area is 0.5 + 0.5 * 0.5 / 2 = 0.75.
    ap, _, _ = metrics.interpolated_ap(np.array([0.5]), np.array([1.0]))
    assert ap == pytest.approx(0.75, abs=1e-12)


# ------------------------------------------------------------------------------------------------ COCO matching
def coco_match(det_xywh, scores, gt_xywh, gt_crowd, gt_area=None, det_cls=None, gt_cls=None):
    d, g = len(det_xywh), len(gt_xywh)
    det_cls = np.zeros(d, np.int32) if det_cls is None else det_cls
    gt_cls = np.zeros(g, np.int32) if gt_cls is None else gt_cls
    gt_area = np.asarray(gt_xywh)[:, 2] * np.asarray(gt_xywh)[:, 3] if gt_area is None else gt_area
    out = _match_coco(np.asarray(det_xywh, np.float32), np.asarray(scores, np.float32), det_cls,
                             np.ones(d, bool), np.asarray(gt_xywh, np.float32), gt_cls, np.ones(g, bool),
                             np.asarray(gt_crowd), np.asarray(gt_area, np.float32))
    return jax.device_get(out)


def test_coco_prefers_regular_ground_truth_and_crowd_absorbs_the_rest():
    gt = [[0, 0, 100, 100], [0, 0, 10, 10]]  # a crowd region and a regular box inside it
    dets = [[0, 0, 10, 10], [50, 50, 10, 10], [20, 20, 10, 10]]
    out = coco_match(dets, [0.9, 0.8, 0.7], gt, [True, False])
    assert out["matched"][:, 0, 0].tolist() == [True, True, True]
    assert out["ignored"][:, 0, 0].tolist() == [False, True, True]  # the crowd's matches are neither TP nor FP
    assert out["gt_ignored"][:, 0].tolist() == [True, False]


def test_coco_area_range_ignores_outside_boxes():
    gt = [[0, 0, 10, 10]]  # area 100: small
    out = coco_match([[0, 0, 10, 10], [200, 200, 50, 50]], [0.9, 0.8], gt, [False])
    small, medium = metrics.AREA_NAMES.index("small"), metrics.AREA_NAMES.index("medium")
    assert out["ignored"][:, small, 0].tolist() == [False, True]  # unmatched 2500-px detection is not small
    assert out["ignored"][:, medium, 0].tolist() == [True, False]  # matched to an ignored (small) ground truth
    assert out["gt_ignored"][0].tolist() == [False, False, True, True]


def test_coco_keeps_at_most_100_detections_per_class():
    dets = np.tile([[0, 0, 10, 10]], (105, 1))
    cls = np.array([0] * 103 + [1] * 2, np.int32)
    out = coco_match(dets, np.linspace(1, 0.5, 105), [[0, 0, 10, 10]], [False], det_cls=cls,
                     gt_cls=np.zeros(1, np.int32))
    assert out["kept"].sum() == 102 and out["rank"].max() == 102


# ------------------------------------------------------------------------------------------- confusion matrix
def counts(det, scores, det_cls, gt, gt_cls):
    return np.asarray(_confusion_counts(
        np.asarray(det, np.float32), np.asarray(scores, np.float32), np.asarray(det_cls), np.ones(len(det), bool),
        np.asarray(gt, np.float32), np.asarray(gt_cls), np.ones(len(gt), bool), num_classes=3))


def test_confusion_hand_counts():
    gt = [[0, 0, 10, 10], [50, 50, 60, 60]]
    det = [[0, 0, 10, 10], [100, 100, 110, 110], [50, 50, 60, 60]]
    m = counts(det, [0.9, 0.8, 0.1], [1, 2, 0], gt, [0, 1])  # det 2 is under the 0.25 matrix threshold
    expected = np.zeros((4, 4), int)
    expected[1, 0] = 1  # class-0 box found as class 1
    expected[3, 1] = 1  # class-1 box missed (its detection is below conf)
    expected[2, 3] = 1  # class-2 detection on background
    np.testing.assert_array_equal(m, expected)


def test_confusion_ignores_images_without_ground_truth():
    m = counts([[0, 0, 10, 10]], [0.9], [1], [[0, 0, 1, 1]], [0])
    assert m[1, 3] == 0 and m[3, 0] == 1  # no match in the image: the reference counts no background detection
    empty = np.asarray(_confusion_counts(
        np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int32), np.ones(1, bool),
        np.zeros((1, 4), np.float32), np.zeros(1, np.int32), np.zeros(1, bool), num_classes=3))
    assert empty.sum() == 0


def test_matrix_conf_switches_val_default_to_quarter():
    assert confusion.matrix_conf(0.001) == 0.25 and confusion.matrix_conf(None) == 0.25
    assert confusion.matrix_conf(0.4) == 0.4
