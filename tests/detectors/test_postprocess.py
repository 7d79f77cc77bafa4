"""Post-processing: same detections as the reference's non_max_suppression; box rescaling to the original image."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.detectors.postprocess import (
    letterbox_gain_pad,
    non_max_suppression,
    scale_boxes,
)


def parity_predictions(num_classes, seed, logit_gain):
    """Eval outputs (b, a, 4 + nc) of the random parity model, with its final head convs scaled by `logit_gain` so
    that scores spread over (0, 1) instead of sitting at the initial prior.

    A random network predicts nearly the same thing at every interior anchor, so scores tie exactly in fp32 and
    the order of tied boxes is arbitrary (in the reference too); a distinct jitter (steps of 2e-7, above the fp32
    spacing) breaks the ties.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from yolojax.convert.reference import build_reference_model, reference_eval_outputs

    model = build_reference_model("n", num_classes, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for level in range(3):
            model.model[22].cv3[level][2].weight.mul_(logit_gain)
            model.model[22].cv3[level][2].bias.copy_(torch.randn(num_classes, generator=generator) - 3)
            model.model[22].cv2[level][2].weight.mul_(20)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (2, 256, 224, 3)).astype(np.float32)
    out = reference_eval_outputs(model, images)
    probs = out[..., 4:]
    distinct_steps = np.stack([rng.permutation(probs[0].size).reshape(probs[0].shape) for _ in probs])
    out[..., 4:] = np.clip(probs + 2e-7 * distinct_steps, 0, 1).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def predictions():
    return {5: parity_predictions(5, seed=1, logit_gain=20), 80: parity_predictions(80, seed=2, logit_gain=3)}


def reference_nms(pred, **kwargs):
    import torch
    from ultralytics.utils.ops import non_max_suppression as ref_nms

    return [o.numpy() for o in ref_nms(torch.from_numpy(pred.transpose(0, 2, 1).copy()), **kwargs)]


SETTINGS = [
    (5, dict(conf_thres=0.25, iou_thres=0.7, max_det=300)),  # predict defaults
    (80, dict(conf_thres=0.001, iou_thres=0.7, max_det=300)),  # val defaults
    (80, dict(conf_thres=0.3, iou_thres=0.5, max_det=100, multi_label=True)),
    (5, dict(conf_thres=0.1, iou_thres=0.6, max_det=50, agnostic=True)),
    (5, dict(conf_thres=0.05, iou_thres=0.7, max_det=300, classes=[1, 3])),
    (80, dict(conf_thres=0.001, iou_thres=0.7, max_det=300, max_nms=500)),  # the pre-NMS cap binds
]


@pytest.mark.parity
@pytest.mark.parametrize("num_classes,settings", SETTINGS)
def test_same_detections_as_reference(predictions, num_classes, settings):
    pred = predictions[num_classes]
    expected = reference_nms(pred, **settings)
    ours = jax.jit(lambda b, p: non_max_suppression(b, p, **settings))(jnp.asarray(pred[..., :4]),
                                                                        jnp.asarray(pred[..., 4:]))
    for i, ref in enumerate(expected):
        valid = np.asarray(ours["valid"][i])
        assert valid.sum() == len(ref) > 0
        assert valid[: len(ref)].all()
        np.testing.assert_array_equal(np.asarray(ours["classes"][i])[valid], ref[:, 5].astype(np.int32))
        np.testing.assert_allclose(np.asarray(ours["scores"][i])[valid], ref[:, 4], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(ours["boxes"][i])[valid], ref[:, :4], rtol=1e-6, atol=1e-4)


def test_fixed_shapes_and_padding():
    boxes = jnp.array([[[50, 50, 20, 20], [52, 50, 20, 20], [200, 200, 10, 10]]], jnp.float32)
    probs = jnp.array([[[0.9, 0.1], [0.8, 0.0], [0.2, 0.6]]])
    out = non_max_suppression(boxes, probs, conf_thres=0.25, iou_thres=0.5, max_det=4)
    assert out["boxes"].shape == (1, 4, 4) and out["classes"].dtype == jnp.int32
    # box 1 overlaps box 0 (IoU 18*20 / (2*400 - 360) = 0.82) with the same class -> suppressed
    assert np.asarray(out["valid"][0]).tolist() == [True, True, False, False]
    np.testing.assert_allclose(np.asarray(out["scores"][0]), [0.9, 0.6, 0, 0], rtol=1e-6)
    assert np.asarray(out["classes"][0]).tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(np.asarray(out["boxes"][0, 1]), [195, 195, 205, 205])


def test_scale_boxes_undoes_letterbox_by_hand():
    # a 480x640 (h, w) image letterboxed into 640x640: r = 1, 80 px bars top and bottom
    boxes = np.array([[10.0, 100.0, 110.0, 700.0]], np.float32)
    gain, pad = letterbox_gain_pad((640, 640), (480, 640))
    assert gain == 1.0 and tuple(pad) == (0, 80)
    np.testing.assert_allclose(scale_boxes(boxes, (480, 640), gain, pad), [[10, 20, 110, 480]])  # clipped at h
    halved = scale_boxes(jnp.asarray([[20.0, 40.0, 60.0, 80.0]]), (1000, 1000), 0.5, (4.0, 8.0))
    np.testing.assert_allclose(np.asarray(halved), [[32, 64, 112, 144]])


@pytest.mark.parity
def test_letterbox_gain_pad_matches_reference_scale_boxes():
    torch = pytest.importorskip("torch")
    from ultralytics.utils.ops import scale_boxes as ref_scale_boxes

    rng = np.random.default_rng(0)
    for orig in [(480, 640), (375, 500), (333, 1000), (720, 405)]:
        boxes = rng.uniform(0, 640, (20, 4)).astype(np.float32)
        boxes[:, 2:] = boxes[:, :2] + rng.uniform(1, 200, (20, 2))
        expected = ref_scale_boxes((640, 640), torch.from_numpy(boxes.copy()), orig).numpy()
        gain, pad = letterbox_gain_pad((640, 640), orig)
        np.testing.assert_allclose(scale_boxes(boxes, orig, gain, pad), expected, rtol=1e-6, atol=1e-4)
