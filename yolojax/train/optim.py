"""Optimizer recipe of the reference trainer (ultralytics 8.2.103, engine/trainer.py), as optax transforms.

Three parameter groups, as the reference builds them:
  0 "decay":  conv/dense kernels (every leaf not named below)  -> weight decay
  1 "norm":   normalization scales (leaf name "scale")          -> no decay
  2 "bias":   every leaf named "bias" (conv and norm biases)     -> no decay
Schedules (host-side, exact formulas of the reference):
  lr factor per EPOCH e:    linear lf(e) = max(1 - e/E, 0) * (1 - lrf) + lrf,
                            cosine lf(e) = max((1 - cos(e*pi/E)) / 2, 0) * (lrf - 1) + 1
  warmup per ITERATION ni <= nw, nw = max(round(warmup_epochs * nb), 100):
    lr(bias) = interp(ni, [0, nw], [warmup_bias_lr, lr0 * lf(e)]), lr(others) = interp(.., [0, lr0 * lf(e)]),
    momentum = interp(ni, [0, nw], [warmup_momentum, momentum]),
    accumulate = max(1, round(interp(ni, [0, nw], [1, nbs / batch])))
  after warmup: lr = lr0 * lf(e) for every group, accumulate = max(round(nbs / batch), 1).
  weight decay = weight_decay * batch * accumulate / nbs (fixed at setup).
The update itself (torch semantics): gradients clipped to global norm 10 (coefficient max / (norm + 1e-6)), then
  SGD:   g += wd * p;  buf = mu * buf + g;  p -= lr * (g + mu * buf)                  (Nesterov, no dampening)
  Adam:  g += wd * p;  AdamW: p *= 1 - lr * wd;  then m, v moments with bias correction, eps 1e-8, beta2 0.999.
The transforms run on the training state's flat parameter buffer (yolojax.train.state.VariablesLayout), in which
each group is one contiguous range: per-group values come from the element's index (`per_group`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

GROUP_DECAY, GROUP_NORM, GROUP_BIAS = 0, 1, 2
NUM_GROUPS = 3


# ---------------------------------------------------------------------------------------------------- schedules
def lr_factor(epoch: float, epochs: int, lrf: float, cos_lr: bool = False) -> float:
    """Multiplier of lr0 during `epoch` (0-based): linear from 1 to lrf, or the cosine 'one cycle' ramp."""
    if cos_lr:
        return max((1 - math.cos(epoch * math.pi / epochs)) / 2, 0) * (lrf - 1) + 1
    return max(1 - epoch / epochs, 0) * (1.0 - lrf) + lrf


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int) -> int:
    """Number of warmup iterations nw (the last warmup iteration index); -1 when warmup is off."""
    return max(round(warmup_epochs * batches_per_epoch), 100) if warmup_epochs > 0 else -1


def nominal_accumulate(nbs: int, batch: int) -> int:
    """Batches whose gradients are summed before one optimizer step, outside warmup."""
    return max(round(nbs / batch), 1)


@dataclasses.dataclass(frozen=True)
class OptimizerPlan:
    """Everything that fixes the optimizer and its schedule for one run (all host-side Python numbers)."""

    name: str                # "SGD" | "Adam" | "AdamW" (after resolving "auto")
    lr0: float               # initial lr of every group
    momentum: float          # SGD momentum / Adam beta1 the optimizer is built with
    target_momentum: float   # momentum warmup rises to (cfg.momentum)
    weight_decay: float      # already scaled by batch * accumulate / nbs
    warmup_bias_lr: float
    warmup_momentum: float
    warmup_iters: int        # nw; -1 = no warmup
    nbs: int
    batch: int
    epochs: int
    lrf: float
    cos_lr: bool
    grad_clip: float = 10.0


def plan_optimizer(cfg: Any, *, num_classes: int, dataset_size: int, batches_per_epoch: int) -> OptimizerPlan:
    """Resolve `optimizer=auto` and scale weight decay as the reference's `_setup_train` / `build_optimizer`.

    auto: SGD(lr 0.01, momentum 0.9) when ceil(dataset_size / max(batch, nbs)) * epochs > 10000 iterations, else
    AdamW(lr round(0.002 * 5 / (4 + nc), 6), beta1 0.9); auto also sets warmup_bias_lr to 0.
    """
    accumulate = nominal_accumulate(cfg.nbs, cfg.batch)
    weight_decay = cfg.weight_decay * cfg.batch * accumulate / cfg.nbs
    name, lr, momentum, warmup_bias_lr = cfg.optimizer, cfg.lr0, cfg.momentum, cfg.warmup_bias_lr
    if name == "auto":
        iterations = math.ceil(dataset_size / max(cfg.batch, cfg.nbs)) * cfg.epochs
        lr_fit = round(0.002 * 5 / (4 + num_classes), 6)
        name, lr, momentum = ("SGD", 0.01, 0.9) if iterations > 10000 else ("AdamW", lr_fit, 0.9)
        warmup_bias_lr = 0.0
    if name not in ("SGD", "Adam", "AdamW"):
        raise ValueError(f"optimizer={name!r} is not supported; choose SGD, Adam, AdamW or auto")
    return OptimizerPlan(
        name=name, lr0=lr, momentum=momentum, target_momentum=cfg.momentum, weight_decay=weight_decay,
        warmup_bias_lr=warmup_bias_lr, warmup_momentum=cfg.warmup_momentum,
        warmup_iters=warmup_iterations(cfg.warmup_epochs, batches_per_epoch), nbs=cfg.nbs, batch=cfg.batch,
        epochs=cfg.epochs, lrf=cfg.lrf, cos_lr=cfg.cos_lr, grad_clip=cfg.grad_clip)


class Hyper(NamedTuple):
    """Per-iteration hyper-parameters fed to the jitted step (device scalars; values never trigger a recompile).

    lr: (3,) float32 learning rate of groups (decay, norm, bias); momentum: () float32 (SGD momentum; Adam beta1
    stays fixed as in the reference); accumulate: () int32 batches per optimizer step.
    """

    lr: Any
    momentum: Any
    accumulate: Any


def hyper_at(plan: OptimizerPlan, iteration: int, epoch: int) -> Hyper:
    """The reference's lr / momentum / accumulate in force at global iteration `iteration` of epoch `epoch`."""
    base_lr = plan.lr0 * lr_factor(epoch, plan.epochs, plan.lrf, plan.cos_lr)
    if plan.warmup_iters >= 0 and iteration <= plan.warmup_iters:
        xs = [0, plan.warmup_iters]
        accumulate = max(1, int(np.interp(iteration, xs, [1, plan.nbs / plan.batch]).round()))
        bias_lr = np.interp(iteration, xs, [plan.warmup_bias_lr, base_lr])
        other_lr = np.interp(iteration, xs, [0.0, base_lr])
        lr = [other_lr, other_lr, bias_lr]
        momentum = np.interp(iteration, xs, [plan.warmup_momentum, plan.target_momentum])
    else:
        accumulate = nominal_accumulate(plan.nbs, plan.batch)
        lr = [base_lr] * NUM_GROUPS
        momentum = plan.target_momentum if plan.warmup_iters >= 0 else plan.momentum
    if plan.name != "SGD":
        momentum = plan.momentum  # Adam groups carry betas, not momentum: warmup leaves beta1 alone
    return Hyper(np.asarray(lr, np.float32), np.float32(momentum), np.int32(accumulate))


# ---------------------------------------------------------------------------------------------------- transforms
def param_groups(params: Any) -> Any:
    """Pytree of group ids (0 decay, 1 norm scale, 2 bias) with the structure of `params`, from leaf names."""

    def group(path, _leaf) -> int:
        name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1])))
        if name == "bias":
            return GROUP_BIAS
        if name == "scale":
            return GROUP_NORM
        return GROUP_DECAY

    return jax.tree_util.tree_map_with_path(group, params)


def per_group(values: Any, group_ends: tuple[int, ...]) -> jax.Array:
    """(n,) array holding values[g] on group g's range of a flat buffer (groups contiguous, ending at
    `group_ends`, n = group_ends[-1]); values: (NUM_GROUPS,) or a sequence of scalars."""
    index = lax.iota(jnp.int32, group_ends[-1])
    out = jnp.asarray(values[len(group_ends) - 1], jnp.float32)
    for g in range(len(group_ends) - 2, -1, -1):
        out = jnp.where(index < group_ends[g], jnp.asarray(values[g], jnp.float32), out)
    return out


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: g *= min(max_norm / (||g|| + 1e-6), 1) over the flat gradient."""

    def update(updates, state, params=None):
        del params
        norm = jnp.sqrt(jnp.sum(jnp.square(updates.astype(jnp.float32))))
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return (updates * coef).astype(updates.dtype), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class SGDState(NamedTuple):
    momentum_buffer: Any


class AdamState(NamedTuple):
    count: Any
    mu: Any
    nu: Any


def grouped_sgd(group_ends: tuple[int, ...], weight_decay: float) -> optax.GradientTransformationExtraArgs:
    """Nesterov SGD with per-group lr and a momentum given at each update (torch.optim.SGD(nesterov=True)), over
    flat fp32 buffers whose groups (decay, norm, bias) end at `group_ends`.

    update(grads, state, params, *, lr (3,), momentum ()) -> (updates to add to params, state).
    """

    def init(params):
        return SGDState(jnp.zeros_like(params))

    def update(grads, state, params, *, lr, momentum, **_):
        g = grads + per_group((weight_decay, 0.0, 0.0), group_ends) * params
        buf = momentum * state.momentum_buffer + g
        return -per_group(lr, group_ends) * (g + momentum * buf), SGDState(buf)

    return optax.GradientTransformationExtraArgs(init, update)


def grouped_adam(group_ends: tuple[int, ...], weight_decay: float, beta1: float, *, decoupled: bool,
                 beta2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """torch.optim.Adam (L2 decay) or AdamW (decoupled decay) with per-group lr, decay on group 0 only, over flat
    fp32 buffers whose groups end at `group_ends`."""

    def init(params):
        return AdamState(jnp.zeros((), jnp.int32), jnp.zeros_like(params), jnp.zeros_like(params))

    def update(grads, state, params, *, lr, **_):
        count = state.count + 1
        bc1 = 1 - beta1 ** count.astype(jnp.float32)
        bc2 = 1 - beta2 ** count.astype(jnp.float32)
        lr, decay = per_group(lr, group_ends), per_group((weight_decay, 0.0, 0.0), group_ends)
        shrink = -lr * decay * params if decoupled else 0.0
        g = grads if decoupled else grads + decay * params
        m = beta1 * state.mu + (1 - beta1) * g
        v = beta2 * state.nu + (1 - beta2) * g * g
        step = -(lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)
        return shrink + step, AdamState(count, m, v)

    return optax.GradientTransformationExtraArgs(init, update)


def build_optimizer(plan: OptimizerPlan, group_ends: tuple[int, ...]) -> optax.GradientTransformationExtraArgs:
    """clip(global norm) -> grouped SGD/Adam/AdamW over the flat parameters whose groups (decay, norm, bias) end at
    `group_ends` (`yolojax.train.state.VariablesLayout.group_ends`).
    update(..., lr=Hyper.lr, momentum=Hyper.momentum)."""
    if not (isinstance(group_ends, tuple) and len(group_ends) == NUM_GROUPS
            and all(isinstance(e, int) for e in group_ends)):
        raise TypeError(f"build_optimizer takes the {NUM_GROUPS} group ends of the flat parameters "
                        f"(VariablesLayout.of(variables).group_ends), not {type(group_ends).__name__}")
    if plan.name == "SGD":
        inner = grouped_sgd(group_ends, plan.weight_decay)
    else:
        inner = grouped_adam(group_ends, plan.weight_decay, plan.momentum, decoupled=plan.name == "AdamW")
    return optax.chain(clip_by_global_norm_torch(plan.grad_clip), inner)
