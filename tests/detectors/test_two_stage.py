"""The two-stage detector: task protocol shapes, a finite loss and gradient, and the detection post-processing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.detectors.faster_rcnn import FasterRCNNTask, detections

TINY = dict(num_classes=3, backbone="tiny", width=16, hidden=32, anchor_sizes=((16,), (32,), (64,)),
            rpn_pre_nms_top_n=(100, 100),
            rpn_post_nms_top_n=(32, 40), rpn_batch_size_per_image=64, roi_batch=16)


def _batch(b=2, hw=64):
    rng = np.random.default_rng(0)
    return {"images": jnp.asarray(rng.integers(0, 256, (b, hw, hw, 3)), jnp.uint8),
            "bboxes": jnp.asarray(np.tile([[0.5, 0.5, 0.4, 0.5], [0.25, 0.25, 0.2, 0.2], [0, 0, 0, 0]], (b, 1, 1)),
                                  jnp.float32),
            "cls": jnp.asarray(np.tile([0, 2, 0], (b, 1)), jnp.int32),
            "mask": jnp.asarray(np.tile([True, True, False], (b, 1)))}


def test_task_protocol_loss_gradient_and_predict_shapes():
    task = FasterRCNNTask(**TINY)
    variables = jax.jit(task.init, static_argnums=1)(jax.random.key(0), (64, 64))
    state = {k: v for k, v in variables.items() if k != "params"}
    batch = _batch()
    (loss, aux), grads = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))(variables["params"], state, batch,
                                                                                  jax.random.key(1))
    assert aux["items"].shape == (len(task.loss_names),) == (4,)
    np.testing.assert_allclose(loss, aux["items"].sum() * 2, rtol=1e-6)  # protocol: sum(items) * batch
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.abs(grads["head"]["cls_score"]["kernel"]).sum()) > 0  # the RoI head is trained
    assert "batch_stats" in aux["model_state"]
    out = jax.jit(lambda v, x: task.predict(v, x, max_det=20))(variables, batch["images"])
    assert out["boxes"].shape == (2, 20, 4) and out["scores"].shape == out["classes"].shape == out["valid"].shape
    assert out["classes"].dtype == jnp.int32 and out["valid"].dtype == jnp.bool_


def test_detections_pick_the_class_and_apply_the_deltas():
    # one proposal, background + 3 classes; class index 2 (foreground class 1) dominates; zero deltas -> proposal
    logits = jnp.array([[[0.0, 0.0, 8.0, 0.0], [5.0, 0.0, 0.0, 0.0]]])
    deltas = jnp.zeros((1, 2, 16))
    proposals = jnp.array([[[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 30.0, 30.0]]])
    run = jax.jit(lambda *a: detections(*a, (100, 100), conf=0.5, iou=0.5, max_det=3))
    out = run(logits, deltas, proposals, jnp.array([[True, False]]))
    assert out["valid"].tolist() == [[True, False, False]]  # the second proposal is padding
    assert int(out["classes"][0, 0]) == 1
    np.testing.assert_allclose(out["scores"][0, 0], np.exp(8) / (np.exp(8) + 3), rtol=1e-6)
    np.testing.assert_allclose(out["boxes"][0, 0], [10, 20, 50, 60], rtol=1e-6)


@pytest.mark.slow
def test_yolov8_backbone_levels_feed_the_heads():
    task = FasterRCNNTask(**{**TINY, "backbone": "yolov8", "scale": "n"})
    variables = jax.jit(task.init, static_argnums=1)(jax.random.key(0), (64, 64))
    assert "model_21" in variables["params"]["backbone"]  # the YOLOv8 neck's last C2f
    state = {k: v for k, v in variables.items() if k != "params"}
    loss, aux = jax.jit(task.loss_fn)(variables["params"], state, _batch(), jax.random.key(1))
    assert bool(jnp.isfinite(loss)) and aux["items"].shape == (4,)


def test_spec_round_trips_through_build_task_and_json():
    import json

    from yolojax.detectors import build_task
    task = FasterRCNNTask(**TINY)
    assert build_task(json.loads(json.dumps(task.spec())), TINY["num_classes"]) == task


def test_bad_anchor_config_raises():
    with pytest.raises(ValueError, match="anchor_sizes"):
        FasterRCNNTask(anchor_sizes=((32,), (64,)))
