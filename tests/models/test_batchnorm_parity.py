"""BatchNorm running statistics as the reference keeps them (torch nn.BatchNorm2d: momentum 0.03, eps 1e-3, running
variance updated with the unbiased batch variance), on one device and over several."""
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.models.layers import BatchNorm, ConvBNAct

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-6  # per tensor: max |ours - reference| / max |reference| (running means pass through zero)


def relative_error(ours: dict, reference: dict) -> dict:
    """Per state_dict key: max |a - b| / max |b|."""
    return {k: float(np.max(np.abs(ours[k] - reference[k])) / np.max(np.abs(reference[k]))) for k in reference}


def running_stats(module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


def test_running_variance_is_unbiased_and_momentum_is_torch_s():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4)) * 2.0 + 1.0
    variables = BatchNorm().init(jax.random.key(1), x, train=False)
    _, updated = BatchNorm().apply(variables, x, train=True, mutable=["batch_stats"])
    flat = np.asarray(x, np.float64).reshape(-1, 4)
    np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.03 * flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["var"], 0.97 + 0.03 * flat.var(0, ddof=1), rtol=1e-6)


@pytest.mark.parity
def test_yolov8_batch_stats_after_ten_train_forwards_equal_reference():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from yolojax.convert.mapping import state_dict_to_variables, variables_to_state_dict
    from yolojax.convert.reference import build_reference_model, reference_state_dict
    from yolojax.models.yolov8 import YOLOv8

    reference = build_reference_model("n", 3, seed=0).train()
    model = YOLOv8("n", 3)
    template = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False), jax.random.key(0))
    variables = state_dict_to_variables(reference_state_dict(reference), template)
    forward = jax.jit(lambda stats, x: model.apply({"params": variables["params"], "batch_stats": stats}, x,
                                                   train=True, mutable=["batch_stats"])[1]["batch_stats"])
    stats, rng = variables["batch_stats"], np.random.default_rng(0)
    for _ in range(10):  # batch 2 at 64 px: the coarsest maps have 2 x 2 x 2 values per channel
        images = rng.random((2, 64, 64, 3), dtype=np.float32)
        with torch.no_grad():
            reference(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
        stats = forward(stats, images)
    ours = variables_to_state_dict({"batch_stats": jax.tree.map(np.asarray, stats)})
    errors = relative_error(ours, running_stats(reference))
    assert len(errors) == 2 * 57
    assert max(errors.values()) <= TOLERANCE, max(errors.items(), key=lambda kv: kv[1])


class TwoConvs(nn.Module):
    """Two ConvBNAct, named as the reference's `model.0`, `model.1` (ultralytics Conv)."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        return ConvBNAct(16, 3, 2, name="model_1")(ConvBNAct(8, 3, 2, name="model_0")(x, train), train)


def two_convs_loss(params, model_state, batch, key):
    """The task protocol's loss_fn over TwoConvs (any differentiable loss: the test keeps lr at 0)."""
    del key
    out, updated = TwoConvs().apply({"params": params, **model_state}, batch["images"].astype(jnp.float32) / 255,
                                    train=True, mutable=["batch_stats"])
    loss = jnp.mean(out) * out.shape[0]
    return loss, {"items": jnp.stack([loss]), "model_state": dict(updated)}


def multi_device_errors(steps: int = 10, batch: int = 4) -> dict:
    """Our train step over every visible device (lr 0, so only the BN statistics move) against the reference's
    per-device BatchNorm (each DDP rank updates its running statistics from its own share of the batch; our step
    then averages the devices' statistics); and a cross-device BatchNorm (`axis_name`) against one torch
    BatchNorm2d over the whole batch (what SyncBatchNorm keeps). Returns the worst relative errors."""
    import torch
    from ultralytics.nn.modules import Conv
    from ultralytics.utils.torch_utils import initialize_weights

    from yolojax.convert.mapping import state_dict_to_variables, variables_to_state_dict
    from yolojax.train.config import load_config
    from yolojax.train.optim import Hyper, build_optimizer, plan_optimizer
    from yolojax.train.state import VariablesLayout, create_state
    from yolojax.train.step import build_train_step, make_mesh, replicate, shard_batch

    torch.manual_seed(0)
    reference = torch.nn.Module()
    reference.model = torch.nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2)).train()
    initialize_weights(reference)  # the reference's BatchNorm settings (eps 1e-3, momentum 0.03), as DetectionModel
    template = jax.eval_shape(lambda k: TwoConvs().init(k, jnp.zeros((1, 32, 32, 3)), train=False), jax.random.key(0))
    variables = state_dict_to_variables({k: v.numpy() for k, v in reference.state_dict().items()}, template)
    plan = plan_optimizer(load_config(["cfg=none", "optimizer=SGD"]), num_classes=1, dataset_size=64,
                          batches_per_epoch=4)
    optimizer = build_optimizer(plan, VariablesLayout.of(variables).group_ends)
    mesh = make_mesh()
    devices = mesh.size
    state = replicate(create_state(variables, optimizer, jax.random.key(0)), mesh)
    step = build_train_step(two_convs_loss, optimizer, mesh)
    hyper = replicate(Hyper(np.zeros(3, np.float32), np.float32(0.9), np.int32(1)), mesh)
    rng = np.random.default_rng(1)
    sync_x = rng.normal(size=(steps, batch, 4, 4, 5)).astype(np.float32) * 3 + 2
    for i in range(steps):
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        state, _ = step(state, shard_batch({"images": images, "mask": np.zeros((batch, 1), bool)}, mesh), hyper)
        shares = np.split(images.transpose(0, 3, 1, 2).astype(np.float32) / 255, devices)
        start = {k: v.clone() for k, v in reference.state_dict().items()}
        per_device = []
        for share in shares:
            reference.load_state_dict(start)
            with torch.no_grad():
                reference.model(torch.from_numpy(np.ascontiguousarray(share)))
            per_device.append({k: v.clone() for k, v in reference.state_dict().items()})
        reference.load_state_dict({k: sum(d[k] for d in per_device) / devices if k in running_stats(reference)
                                   else start[k] for k in start})
    ours = variables_to_state_dict({"batch_stats": jax.tree.map(np.asarray, state.variables()["batch_stats"])})
    per_device_error = max(relative_error(ours, running_stats(reference)).values())

    sync = BatchNorm(axis_name="data")
    spec = jax.sharding.PartitionSpec
    variables = sync.init(jax.random.key(0), sync_x[0], train=False)
    apply = jax.jit(jax.shard_map(lambda v, x: sync.apply(v, x, train=True, mutable=["batch_stats"]), mesh=mesh,
                                  in_specs=(spec(), spec("data")), out_specs=(spec("data"), spec())))
    torch_bn = torch.nn.BatchNorm2d(5, eps=1e-3, momentum=0.03).train()
    for x in sync_x:
        y, updated = apply(variables, x)
        variables = {**variables, **updated}
        y_ref = torch_bn(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    stats = jax.tree.map(np.asarray, variables["batch_stats"])
    sync_error = max(relative_error({"mean": stats["mean"], "var": stats["var"]},
                                    {"mean": torch_bn.running_mean.numpy(), "var": torch_bn.running_var.numpy()}
                                    ).values())
    output_error = float(np.max(np.abs(np.asarray(y) - y_ref.detach().numpy().transpose(0, 2, 3, 1))))
    return {"devices": devices, "per_device": per_device_error, "sync": sync_error, "sync_output": output_error}


_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{repo!r}, {repo!r} + "/tests", {repo!r} + "/tests/models"]
    import conftest  # noqa: F401  (numpy 2 alias the reference needs)
    from test_batchnorm_parity import multi_device_errors
    print("RESULT " + json.dumps(multi_device_errors()))
""")


@pytest.mark.parity
def test_batch_stats_over_two_devices_equal_reference():
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(repo=REPO)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert errors["devices"] == 2
    assert errors["per_device"] <= TOLERANCE, errors
    assert errors["sync"] <= TOLERANCE, errors
    assert errors["sync_output"] <= 1e-5, errors
