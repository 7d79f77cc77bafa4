"""Optimizer recipe vs the reference trainer's formulas and torch's optimizers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.train.config import load_config
from yolojax.train.optim import (
    GROUP_BIAS,
    GROUP_DECAY,
    GROUP_NORM,
    build_optimizer,
    hyper_at,
    lr_factor,
    param_groups,
    per_group,
    plan_optimizer,
    warmup_iterations,
)
from yolojax.train.state import VariablesLayout


def reference_schedule(cfg, lr0, momentum0, bias_lr0, nb, epochs, batch):
    """Replay the reference trainer's lr / momentum / accumulate bookkeeping with torch's own LambdaLR.

    Mirrors ultralytics 8.2.103 engine/trainer.py (_setup_train, _setup_scheduler, the warmup block of _do_train):
    a torch SGD with param groups [bias, decay, norm], LambdaLR stepped at each epoch start, warmup values
    written into the groups per iteration. Yields (ni, [lr decay, lr norm, lr bias], momentum, accumulate).
    """
    torch = pytest.importorskip("torch")
    from ultralytics.utils.torch_utils import one_cycle

    groups = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opt = torch.optim.SGD([groups[0]], lr=lr0, momentum=momentum0, nesterov=True)
    opt.add_param_group({"params": [groups[1]], "weight_decay": 1e-3})
    opt.add_param_group({"params": [groups[2]], "weight_decay": 0.0})
    if cfg.cos_lr:
        lf = one_cycle(1, cfg.lrf, epochs)
    else:
        lf = lambda x: max(1 - x / epochs, 0) * (1.0 - cfg.lrf) + cfg.lrf  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lf)
    scheduler.last_epoch = -1
    nw = max(round(cfg.warmup_epochs * nb), 100)
    accumulate = max(round(cfg.nbs / batch), 1)
    for epoch in range(epochs):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step()
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, int(np.interp(ni, xi, [1, cfg.nbs / batch]).round()))
                for j, x in enumerate(opt.param_groups):
                    x["lr"] = np.interp(ni, xi, [bias_lr0 if j == 0 else 0.0, x["initial_lr"] * lf(epoch)])
                    x["momentum"] = np.interp(ni, xi, [cfg.warmup_momentum, cfg.momentum])
            pg = opt.param_groups
            yield ni, epoch, [pg[1]["lr"], pg[2]["lr"], pg[0]["lr"]], pg[0]["momentum"], accumulate


@pytest.mark.parity
@pytest.mark.parametrize("cos_lr,warmup_epochs,batch", [(False, 3.0, 16), (True, 3.0, 8), (False, 0.5, 32)])
def test_schedule_matches_reference_trainer_per_iteration(cos_lr, warmup_epochs, batch):
    cfg = load_config(["cfg=none", "optimizer=SGD", f"cos_lr={cos_lr}", f"warmup_epochs={warmup_epochs}",
                       f"batch={batch}", "epochs=7"])
    nb = 45
    plan = plan_optimizer(cfg, num_classes=3, dataset_size=nb * batch, batches_per_epoch=nb)
    assert plan.warmup_iters == max(round(warmup_epochs * nb), 100)
    seen = 0
    for ni, epoch, lrs, momentum, accumulate in reference_schedule(cfg, 0.01, 0.937, 0.1, nb, 7, batch):
        hyper = hyper_at(plan, ni, epoch)
        np.testing.assert_allclose(hyper.lr, np.float32(lrs), rtol=1e-6, atol=1e-9, err_msg=f"lr at ni={ni}")
        assert hyper.momentum == pytest.approx(momentum, rel=1e-6), ni
        assert int(hyper.accumulate) == accumulate, ni
        seen += 1
    assert seen == 7 * nb


def test_lr_factor_linear_and_cosine_end_points():
    assert lr_factor(0, 10, 0.01) == 1.0
    assert lr_factor(10, 10, 0.01) == pytest.approx(0.01)
    assert lr_factor(5, 10, 0.01) == pytest.approx(0.505)
    assert lr_factor(5, 10, 0.01, cos_lr=True) == pytest.approx(0.505)  # cosine midpoint = linear midpoint
    assert lr_factor(2, 10, 0.01, cos_lr=True) == pytest.approx(1 + (1 - math.cos(0.2 * math.pi)) / 2 * -0.99)


def test_warmup_is_at_least_100_iterations_and_off_at_zero():
    assert warmup_iterations(3.0, 10) == 100
    assert warmup_iterations(3.0, 1000) == 3000
    assert warmup_iterations(0.0, 1000) == -1


def test_weight_decay_scaled_by_batch_times_accumulate_over_nbs():
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=24"])  # accumulate round(64/24) = 3
    plan = plan_optimizer(cfg, num_classes=80, dataset_size=1000, batches_per_epoch=42)
    assert plan.weight_decay == pytest.approx(5e-4 * 24 * 3 / 64)


def test_auto_picks_adamw_with_fitted_lr_for_short_runs_and_sgd_for_long():
    cfg = load_config(["cfg=none", "optimizer=auto", "epochs=100", "batch=16"])
    short = plan_optimizer(cfg, num_classes=3, dataset_size=6400, batches_per_epoch=400)  # 100*100 = 10000 its
    assert (short.name, short.lr0, short.momentum, short.warmup_bias_lr) == ("AdamW", round(0.01 / 7, 6), 0.9, 0.0)
    long = plan_optimizer(cfg, num_classes=3, dataset_size=6464, batches_per_epoch=404)  # 101*100 > 10000
    assert (long.name, long.lr0, long.momentum, long.warmup_bias_lr) == ("SGD", 0.01, 0.9, 0.0)


def test_param_groups_split_kernels_norm_scales_and_biases():
    params = {"conv": {"kernel": jnp.zeros((3, 3, 2, 4)), "bias": jnp.zeros(4)},
              "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}, "dense": {"kernel": jnp.zeros((4, 2))}}
    groups = param_groups(params)
    assert groups == {"conv": {"kernel": GROUP_DECAY, "bias": GROUP_BIAS},
                      "bn": {"scale": GROUP_NORM, "bias": GROUP_BIAS}, "dense": {"kernel": GROUP_DECAY}}


def _flat_optimizer(plan, params):
    """The optimizer over the flat buffer of `params`, and that buffer's layout (as the training state has them)."""
    layout = VariablesLayout.of({"params": params})
    return build_optimizer(plan, layout.group_ends), layout.params


def test_flat_parameters_keep_each_group_together_in_tree_order():
    params = {"a": {"bias": jnp.zeros(2), "kernel": jnp.zeros((2, 3))}, "b": {"scale": jnp.zeros(4)},
              "c": {"bias": jnp.zeros(1), "kernel": jnp.zeros(5)}}
    layout = VariablesLayout.of({"params": params})
    assert layout.group_ends == (11, 15, 18)  # kernels a, c; scale b; biases a, c
    flat = np.asarray(layout.params.flatten(jax.tree.map(lambda x: x + np.arange(x.size).reshape(x.shape), params)))
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 0])
    back = layout.params.unflatten(layout.params.flatten(params))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    np.testing.assert_array_equal(np.asarray(per_group(np.float32([1, 2, 3]), layout.group_ends)),
                                  [1] * 11 + [2] * 4 + [3] * 3)


def _torch_twin(params):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in params.items()}
    return torch, tensors


@pytest.mark.parity
@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adam"])
def test_optimizer_steps_match_torch_with_clipping_and_groups(name):
    """Several steps with changing lr / momentum, large gradients (clipping active) vs torch's optimizers."""
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(5, 3)).astype(np.float32), "scale": rng.normal(size=3).astype(np.float32),
              "bias": rng.normal(size=3).astype(np.float32)}
    torch, tensors = _torch_twin(params)
    wd = 0.05
    if name == "SGD":
        topt = torch.optim.SGD([tensors["bias"]], lr=0.1, momentum=0.9, nesterov=True)
    else:
        topt = getattr(torch.optim, name)([tensors["bias"]], lr=0.1, betas=(0.9, 0.999), weight_decay=0.0)
    topt.add_param_group({"params": [tensors["kernel"]], "weight_decay": wd})
    topt.add_param_group({"params": [tensors["scale"]], "weight_decay": 0.0})

    cfg = load_config(["cfg=none", f"optimizer={name}", "momentum=0.9", "batch=64", "weight_decay=0.05"])
    plan = plan_optimizer(cfg, num_classes=1, dataset_size=640, batches_per_epoch=10)
    assert plan.weight_decay == pytest.approx(wd)
    opt, layout = _flat_optimizer(plan, params)
    flat = layout.flatten(params)
    state = opt.init(flat)
    for step in range(4):
        grads = {k: (rng.normal(size=v.shape) * (8.0 if step % 2 else 0.3)).astype(np.float32)
                 for k, v in params.items()}
        lrs, momentum = np.float32([0.02, 0.03, 0.05 + 0.01 * step]), np.float32(0.8 + 0.03 * step)
        for group, lr in zip(topt.param_groups, [lrs[2], lrs[0], lrs[1]]):  # torch order: bias, decay, norm
            group["lr"] = float(lr)
            if name == "SGD":
                group["momentum"] = float(momentum)
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm=10.0)
        topt.step()
        updates, state = opt.update(layout.flatten(grads), state, flat, lr=lrs, momentum=momentum)
        flat = flat + updates
        jparams = layout.unflatten(flat)
        for k in params:
            tol = 2e-6 if name == "SGD" else 1e-5  # Adam's division by sqrt(v) amplifies fp32 rounding
            np.testing.assert_allclose(np.asarray(jparams[k]), tensors[k].detach().numpy(), rtol=tol, atol=tol / 10,
                                       err_msg=f"{name} step {step} {k}")


def test_sgd_step_by_hand():
    """One Nesterov step from zero momentum: p - lr * (g' + mu * g'), g' = clip(g) + wd * p on kernels only."""
    params = {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5])}
    grads = {"kernel": jnp.array([3.0, 4.0]), "bias": jnp.array([0.0])}  # norm 5 < 10: no clipping
    cfg = load_config(["cfg=none", "optimizer=SGD", "batch=64", "weight_decay=0.1"])
    opt, layout = _flat_optimizer(plan_optimizer(cfg, num_classes=1, dataset_size=64, batches_per_epoch=1), params)
    flat = layout.flatten(params)
    updates = layout.unflatten(opt.update(layout.flatten(grads), opt.init(flat), flat, lr=np.float32([0.1, 0.1, 0.2]),
                                          momentum=0.5)[0])
    g = np.array([3.0 + 0.1 * 1.0, 4.0 + 0.1 * -2.0])
    np.testing.assert_allclose(updates["kernel"], -0.1 * (g + 0.5 * g), rtol=1e-6)
    np.testing.assert_allclose(updates["bias"], [0.0])
