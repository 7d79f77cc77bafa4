"""The data-parallel train step: one compile, N devices == 1 device, accumulation, non-finite skipping."""
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import ToyTask, toy_batch

from yolojax.train.config import load_config
from yolojax.train.optim import Hyper, hyper_at, plan_optimizer
from yolojax.train.setup import build_training
from yolojax.train.state import split_variables
from yolojax.train.step import (
    build_train_step,
    make_mesh,
    psum_flat,
    replicate,
    shard_batch,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _setup(task, batch=8, extra=()):
    cfg = load_config(["cfg=none", "optimizer=SGD", f"batch={batch}", "nbs=16", *extra])
    plan = plan_optimizer(cfg, num_classes=1, dataset_size=10 * batch, batches_per_epoch=10)
    run = build_training(task, plan, (16, 16))
    return plan, run.optimizer, run.mesh, run.state


def test_compiles_once_over_batches_with_different_box_counts():
    traces = []

    class CountingTask(ToyTask):
        def loss_fn(self, params, model_state, batch, key):
            traces.append(1)
            return super().loss_fn(params, model_state, batch, key)

    task = CountingTask()
    plan, optimizer, mesh, state = _setup(task)
    step = build_train_step(task.loss_fn, optimizer, mesh)
    for i, boxes in enumerate([1, 6, 3, 0, 5]):
        batch = toy_batch(i, num_boxes=boxes)
        assert batch["mask"].sum() == 8 * boxes
        state, metrics = step(state, shard_batch(batch, mesh), replicate(hyper_at(plan, i, 0), mesh))
    assert int(state.iteration) == 5 and bool(metrics["finite"])
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_accumulated_steps_equal_one_update_with_summed_gradients_by_hand():
    """accumulate=2 from last_opt_step=-1: iterations 0 and 1 are summed and applied at iteration 1 (the
    reference's `ni - last_opt_step >= accumulate`) — compared with grad(b0) + grad(b1) through the optimizer."""
    task = ToyTask()
    plan, optimizer, mesh, state0 = _setup(task)
    layout, flat0 = state0.layout, np.asarray(state0.params)
    params0, model_state0 = split_variables(jax.device_get(state0.variables()))
    step = build_train_step(task.loss_fn, optimizer, mesh)
    hyper = Hyper(np.float32([0.05, 0.04, 0.03]), np.float32(0.9), np.int32(2))
    b0, b1 = toy_batch(0), toy_batch(1)
    state, m0 = step(state0, shard_batch(b0, mesh), replicate(hyper, mesh))
    assert not bool(m0["stepped"])
    np.testing.assert_array_equal(np.asarray(state.params), flat0)
    state, m1 = step(state, shard_batch(b1, mesh), replicate(hyper, mesh))
    assert bool(m1["stepped"]) and int(state.ema_updates) == 1

    @jax.jit
    def by_hand(params, model_state):
        key = jax.random.PRNGKey(1)
        g0, aux0 = jax.grad(lambda p: task.loss_fn(p, model_state, b0, key), has_aux=True)(params)
        g1, _ = jax.grad(lambda p: task.loss_fn(p, aux0["model_state"], b1, key), has_aux=True)(params)
        summed = layout.params.flatten(jax.tree.map(jnp.add, g0, g1))
        flat = layout.params.flatten(params)
        updates, _ = optimizer.update(summed, optimizer.init(flat), flat, lr=hyper.lr, momentum=hyper.momentum)
        return flat + updates

    np.testing.assert_allclose(state.params, by_hand(params0, model_state0), rtol=1e-5, atol=1e-7)


def test_non_finite_loss_skips_the_update_and_is_counted():
    task = ToyTask()
    plan, optimizer, mesh, state = _setup(task)
    step = build_train_step(task.loss_fn, optimizer, mesh)
    state, _ = step(state, shard_batch(toy_batch(0), mesh), replicate(hyper_at(plan, 0, 0), mesh))
    before = jax.tree.map(np.asarray, (state.params, state.model_state, state.ema, state.grad_accum))
    bad = toy_batch(1)
    bad["bboxes"][0, 0, 0] = np.nan
    for i in (1, 2):
        state, metrics = step(state, shard_batch(bad, mesh), replicate(hyper_at(plan, i, 0), mesh))
        assert not bool(metrics["finite"]) and not bool(metrics["stepped"])
    assert (int(state.nonfinite_total), int(state.nonfinite_run), int(state.iteration)) == (2, 2, 3)
    after = jax.tree.map(np.asarray, (state.params, state.model_state, state.ema, state.grad_accum))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    state, metrics = step(state, shard_batch(toy_batch(2), mesh), replicate(hyper_at(plan, 3, 0), mesh))
    assert bool(metrics["finite"]) and int(state.nonfinite_run) == 0 and int(state.nonfinite_total) == 2


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path[:0] = [{repo!r}, {repo!r} + "/tests", {repo!r} + "/tests/train"]
    from test_train_step import count_all_reduces, first_gradient, run_steps
    out = run_steps()
    out["all_reduces"] = count_all_reduces()
    out["gradients"] = {{exchange: first_gradient(exchange) for exchange in ("flat", "autodiff")}}
    print("RESULT " + json.dumps(out))
""")


def run_steps(num_steps: int = 3) -> dict:
    """Three steps of the cross-device-BN toy task on a global batch of 16 over every visible device."""
    task = ToyTask(bn_axis="data")
    plan, optimizer, mesh, state = _setup(task, batch=16, extra=("warmup_epochs=0",))
    step = build_train_step(task.loss_fn, optimizer, mesh)
    losses = []
    for i in range(num_steps):
        state, metrics = step(state, shard_batch(toy_batch(i, batch=16), mesh), replicate(hyper_at(plan, i, 0), mesh))
        losses.append(float(metrics["loss"]))
    leaves = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves((state.params, state.model_state))]
    return {"devices": mesh.size, "losses": losses, "leaves": leaves, "stepped": int(state.ema_updates)}


def first_gradient(exchange: str = "flat") -> list:
    """The summed gradient of one global batch of 16 (cross-device BN), read from the accumulator before the first
    optimizer step (accumulate=2), as flat lists per leaf."""
    task = ToyTask(bn_axis="data")
    plan, optimizer, mesh, state = _setup(task, batch=16)
    step = build_train_step(task.loss_fn, optimizer, mesh, exchange=exchange)
    hyper = Hyper(np.float32([0.01] * 3), np.float32(0.9), np.int32(2))
    state, metrics = step(state, shard_batch(toy_batch(0, batch=16), mesh), replicate(hyper, mesh))
    assert not bool(metrics["stepped"])
    return [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(state.grad_accum)]


def count_all_reduces() -> int:
    """All-reduce ops in the compiled step of the toy task with per-device BN (what the step itself exchanges)."""
    task = ToyTask()
    plan, optimizer, mesh, state = _setup(task, batch=16)
    step = build_train_step(task.loss_fn, optimizer, mesh)
    hlo = step.lower(state, shard_batch(toy_batch(0, batch=16), mesh), replicate(hyper_at(plan, 0, 0), mesh))
    text = hlo.compile().as_text()
    return len(re.findall(r"\sall-reduce(?:-start)?\(", text))


def test_four_cpu_devices_match_one_device_on_the_same_global_batch():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT.format(repo=REPO)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = json.loads(proc.stdout.split("RESULT ", 1)[1])
    one = run_steps()
    assert (four["devices"], one["devices"]) == (4, 1)
    assert one["stepped"] == four["stepped"] == 3
    assert four["all_reduces"] == 1  # gradients, loss, items, BN statistics and counts: one flat buffer
    # the gradient of the global batch, not the device count times it (read before clipping, which could hide it)
    one_grad = first_gradient()
    scale = max(abs(v) for leaf in one_grad for v in leaf)
    for exchange, grads in four["gradients"].items():
        for a, b in zip(grads, one_grad):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=exchange)
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    for a, b in zip(four["leaves"], one["leaves"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("devices", [1, None], ids=["one_device", "all_devices"])
def test_psum_flat_equals_leafwise_psum_and_keeps_dtypes(devices):
    tree = {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": {"c": jnp.int32(7), "d": jnp.ones((4,))}}
    mesh = make_mesh(jax.devices()[:devices])
    spec = jax.sharding.PartitionSpec()

    def both(t):
        return psum_flat(t, "data"), jax.lax.psum(t, "data")

    flat, leafwise = jax.jit(jax.shard_map(both, mesh=mesh, in_specs=(spec,), out_specs=(spec, spec)))(tree)
    for a, b in zip(jax.tree.leaves(flat), jax.tree.leaves(leafwise)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_yolov8_step_gives_the_same_gradient_with_either_exchange():
    """YOLOv8 (fused BatchNorm + SiLU, scatter-free pools) through the step with parameters cast to varying
    ("flat") and left replicated ("autodiff"): the same accumulated gradient."""
    from yolojax.bench.train_step import padded_targets
    from yolojax.detectors import YOLOv8Task

    task = YOLOv8Task(scale="n", num_classes=3)
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=2", "nbs=4"])
    plan = plan_optimizer(cfg, num_classes=3, dataset_size=20, batches_per_epoch=10)
    rng = np.random.default_rng(0)
    cls, bboxes, mask = padded_targets(rng, 2, 3, 4, 3)
    batch = {"images": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "bboxes": bboxes, "cls": cls,
             "mask": mask}
    hyper = Hyper(np.float32([0.01] * 3), np.float32(0.9), np.int32(2))  # accumulate: the gradient stays readable
    grads = {}
    for exchange in ("flat", "autodiff"):
        run = build_training(task, plan, (32, 32))
        # the state the step takes and donates is a dozen flat buffers and counters, not arrays per leaf (each
        # argument costs the host time at every call; YOLOv8n's per-leaf state was 966 arrays)
        assert len(jax.tree.leaves(run.state)) == 12
        step = build_train_step(task.loss_fn, run.optimizer, run.mesh, exchange=exchange)
        state, metrics = step(run.state, shard_batch(batch, run.mesh), replicate(hyper, run.mesh))
        assert bool(metrics["finite"]) and not bool(metrics["stepped"])
        grads[exchange] = jax.tree.leaves(state.grad_accum)
    for a, b in zip(grads["flat"], grads["autodiff"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
