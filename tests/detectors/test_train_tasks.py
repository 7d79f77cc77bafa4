"""Task registry: the model config's family picks the task; the YOLOv8 task trains through the real step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.detectors import YOLOv8Task, build_task
from yolojax.train.config import load_config, load_model_config


def test_yolov8_configs_build_the_yolov8_task_with_scale_classes_dtype_and_gains():
    task = build_task(load_model_config("yolov8s"), 3, dtype=jnp.bfloat16, hyp=load_config(["box=5.0"]))
    assert task == YOLOv8Task(scale="s", num_classes=3, dtype=jnp.bfloat16, box=5.0, cls=0.5, dfl=1.5)
    assert task.loss_names == ("box", "cls", "dfl")


def test_unknown_family_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"model family 'yolo8' unknown; did you mean 'yolov8'"):
        build_task({"family": "yolo8"}, 3)


@pytest.mark.slow
def test_yolov8n_task_loss_decreases_over_a_few_real_steps():
    from toy import toy_batch

    from yolojax.train.optim import hyper_at, plan_optimizer
    from yolojax.train.setup import build_training
    from yolojax.train.step import replicate, shard_batch

    task = YOLOv8Task(scale="n", num_classes=2)
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=4", "nbs=4", "warmup_epochs=0"])
    plan = plan_optimizer(cfg, num_classes=2, dataset_size=40, batches_per_epoch=10)
    run = build_training(task, plan, (64, 64))
    mesh, state, step = run.mesh, run.state, run.step
    batch = toy_batch(0, batch=4, hw=64, max_boxes=4)
    batch["bboxes"][..., 2:] = np.clip(batch["bboxes"][..., 2:], 0.1, 0.3)
    losses = []
    for i in range(6):
        state, metrics = step(state, shard_batch(batch, mesh), replicate(hyper_at(plan, 100 + i, 0), mesh))
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    out = jax.jit(task.predict)(state.ema_variables(), batch["images"])
    assert out["boxes"].shape == (4, 300, 4) and out["valid"].dtype == jnp.bool_
