"""One data-parallel training iteration, jitted once, on every local device (`jax.shard_map` over a 1-D mesh).

Per iteration (the reference's inner loop body, as one pure function):
  0. the augmentation the pipeline left to the device (`warp_on_device`: Mosaic + RandomPerspective pixels;
     `hsv_on_device`: RandomHSV's colour change) is finished here (`yolojax.data.device.augment`), so the task
     always sees the CPU pipeline's RGB uint8 images;
  1. each device computes the task loss and its gradient on its slice of the global batch;
  2. gradients and the loss are summed over devices. The task loss is, like the reference's, a sum over its batch
     (mean loss * local batch), so the sum over devices equals the loss of the global batch — the same gradient as
     the reference's DDP (loss * world_size, then averaged). With `exchange="flat"` (the default) everything a step
     exchanges between devices (gradients, loss, loss items, BN statistics, instance count) travels as ONE
     all-reduce of a flat fp32 buffer (`psum_flat`): YOLOv8 has a few hundred small leaves, and a collective per
     leaf pays each its launch and synchronisation latency. The parameters enter the loss as device-varying values
     (`lax.pcast(..., to="varying")`), so autodiff leaves each device's own gradient for that one sum; left
     replicated, shard_map's autodiff would already sum the gradients across devices itself (the transpose of the
     implicit broadcast), and summing them again would scale them by the device count. `exchange="autodiff"` lets
     autodiff sum the gradients (per leaf, free to overlap the backward pass) and sums the rest in one buffer;
  3. BatchNorm normalizes with each device's own batch statistics (as the reference's DDP, which does not use
     SyncBatchNorm); the updated running statistics are averaged over devices (they travel in the one sum) so
     every replica keeps identical state (cheaper and more faithful than DDP's broadcast of device 0's buffers).
     Each device's running variance takes the unbiased variance of its own share (n = its elements per channel),
     as each DDP rank's BatchNorm does: the average of those is unbiased too. A model that wants cross-device batch
     statistics can name the mesh axis (`axis_name="data"`) in its BatchNorm (yolojax.models.layers.BatchNorm then
     counts n over all devices, as SyncBatchNorm does);
  4. a non-finite loss or gradient (or any other exchanged value) leaves params, BN statistics and the accumulated
     gradient untouched and is counted; otherwise the gradient is added to the accumulator;
  5. when `iteration - last_opt_step >= accumulate`, the optimizer (clip + grouped SGD/Adam) applies the summed
     gradient and the EMA is updated. Both outcomes are computed and selected with `where` (no host round trip).
The state is replicated; its buffers are donated. Parameters, gradient sum, optimizer buffers and EMA are flat
(yolojax.ops.flat), so steps 4 and 5 are a few elementwise passes, not a few per leaf. Hyper-parameters arrive
as device scalars, so new values never recompile. Compute dtype (bf16 on GPU/TPU) is the task's choice; params
and optimizer state stay fp32.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from yolojax.data.device.augment import WARP_PREFIX, finish_augmentation
from yolojax.ops.flat import FlatLayout
from yolojax.train.ema import ema_update
from yolojax.train.optim import Hyper
from yolojax.train.state import TrainState, split_variables

AXIS = "data"
TRAIN_KEYS = ("images", "bboxes", "cls", "mask", "hsv_lut")


def make_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh named 'data' over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree fully replicated on the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, keys: tuple[str, ...] | None = None) -> dict:
    """Host batch (this process's rows) -> global arrays split over the mesh along axis 0.

    batch: images uint8 (b, h, w, 3), bboxes (b, m, 4) normalized xywh, cls (b, m) int32, mask (b, m) bool, and
    optionally hsv_lut (b, 256, 3) uint8 (then images are BGR) and the `warp_*` render inputs (see
    yolojax.data.device.augment); absent keys are skipped, other (host-only) entries are dropped (`keys`, default
    TRAIN_KEYS and the warp keys, names what is kept). b * process_count must divide evenly over the mesh's devices.
    """
    if keys is None:
        keys = TRAIN_KEYS + tuple(k for k in batch if k.startswith(WARP_PREFIX))
    sharding = NamedSharding(mesh, P(AXIS))
    out = {}
    for key in keys:
        if key not in batch:
            continue
        local = np.asarray(batch[key])
        if (local.shape[0] * jax.process_count()) % mesh.size:
            raise ValueError(f"batch of {local.shape[0] * jax.process_count()} images does not split over "
                             f"{mesh.size} devices; choose batch as a multiple of the device count")
        out[key] = jax.make_array_from_process_local_data(sharding, local)
    return out


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _varying(tree: Any, axis: str, exchange: str) -> Any:
    return tree if exchange == "none" else lax.pcast(tree, axis, to="varying")


def psum_flat(tree: Any, axis: str, *, with_finite: bool = False) -> Any:
    """`lax.psum(tree, axis)` as one all-reduce: the leaves laid end to end in one fp32 buffer (`FlatLayout`),
    summed, split back (each leaf keeps its shape and dtype; integer leaves are exact below 2**24). with_finite:
    also return whether every summed value is finite (one reduction over the buffer).

    Over one device the psum is a no-op; an optimization barrier then keeps the buffer, which XLA would otherwise
    dissolve back into the leaves. The buffer is worth keeping on its own: the update that reads slices of it
    compiles to a few hundred fewer kernels for YOLOv8n, without per-leaf copies
    (benchmarks/2026-11-26_speed/README.md)."""
    layout = FlatLayout.of(tree)
    summed = lax.psum(layout.flatten(tree), axis)
    if lax.axis_size(axis) == 1:
        summed = lax.optimization_barrier(summed)
    result = layout.unflatten(summed)
    return (result, jnp.all(jnp.isfinite(summed))) if with_finite else result


EXCHANGES = ("flat", "autodiff", "none")


def make_local_step(loss_fn: Callable, optimizer: Any, *, ema_decay: float = 0.9999, ema_tau: float = 2000.0,
                    axis: str = AXIS, exchange: str = "flat") -> Callable:
    """The per-device body: (state, local batch, hyper) -> (state, metrics). Must run under a mapped `axis`.

    exchange: how devices combine their results (module docstring): "flat" or "autodiff"; "none" exchanges
    nothing, to measure what the exchange costs (each device then trains on its own share: not for training)."""
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange={exchange!r}: use one of {EXCHANGES}")

    def local_step(state: TrainState, batch: dict, hyper: Hyper) -> tuple[TrainState, dict]:
        batch = finish_augmentation(batch)
        key = jax.random.fold_in(jax.random.fold_in(state.rng, state.iteration), lax.axis_index(axis))
        flat_params = state.params if exchange == "autodiff" else _varying(state.params, axis, exchange)
        params, model_state_tree = split_variables(state.layout.variables(flat_params, state.model_state))
        grad_fn = jax.value_and_grad(lambda p: loss_fn(p, model_state_tree, batch, key), has_aux=True)
        (loss, aux), grads = grad_fn(params)
        grads = state.layout.params.flatten(grads, state.params.dtype)
        local = {"loss": loss.astype(jnp.float32), "items": jnp.asarray(aux["items"], jnp.float32),
                 "model_state": state.layout.model_state.flatten(aux["model_state"], state.model_state.dtype),
                 "instances": jnp.sum(batch["mask"]).astype(jnp.int32)}
        if exchange == "flat":
            local["grads"] = grads
        devices = lax.psum(1, axis) if exchange != "none" else 1  # a compile-time constant
        if exchange == "none":
            summed, finite = local, jnp.isfinite(loss) & jnp.all(jnp.isfinite(grads))
        else:
            summed, finite = psum_flat(local, axis, with_finite=True)
            if exchange == "autodiff":  # autodiff summed the gradients itself: they are not in the buffer
                finite = finite & jnp.all(jnp.isfinite(grads))
        grads, loss = summed.get("grads", grads), summed["loss"]
        items = summed["items"] / devices

        grad_accum = jnp.where(finite, state.grad_accum + grads, state.grad_accum)
        model_state = jnp.where(finite, summed["model_state"] / devices, state.model_state)
        due = finite & (state.iteration - state.last_opt_step >= hyper.accumulate)

        updates, opt_state = optimizer.update(grad_accum, state.opt_state, state.params, lr=hyper.lr,
                                              momentum=hyper.momentum)
        stepped_params = state.params + updates
        ema_updates = state.ema_updates + 1
        stepped_ema = ema_update(state.ema, {"params": stepped_params, "model_state": model_state}, ema_updates,
                                 ema_decay, ema_tau)
        new_state = dataclasses.replace(
            state, iteration=state.iteration + 1,
            last_opt_step=jnp.where(due, state.iteration, state.last_opt_step),
            params=jnp.where(due, stepped_params, state.params),
            model_state=model_state,
            opt_state=_select(due, opt_state, state.opt_state),
            grad_accum=jnp.where(due, 0.0, grad_accum),
            ema=_select(due, stepped_ema, state.ema),
            ema_updates=jnp.where(due, ema_updates, state.ema_updates),
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
            nonfinite_run=jnp.where(finite, 0, state.nonfinite_run + 1),
        )
        metrics = {"loss": loss, "items": items, "finite": finite, "stepped": due,
                   "nonfinite_run": new_state.nonfinite_run,
                   "instances": summed["instances"]}
        return new_state, metrics

    return local_step


def build_train_step(loss_fn: Callable, optimizer: Any, mesh: Mesh, *, ema_decay: float = 0.9999,
                     ema_tau: float = 2000.0, exchange: str = "flat") -> Callable:
    """Jitted `step(state, batch, hyper) -> (state, metrics)` over all devices of `mesh`; `state` is donated.

    loss_fn(params, model_state, batch, key) -> (loss, {"items": (k,), "model_state": ...}) (the task protocol).
    batch: from `shard_batch`; hyper: `Hyper` of device scalars (see `replicate`); exchange: see `make_local_step`.
    metrics: loss () summed over devices, items (k,) averaged, finite/stepped () bool, nonfinite_run () and
    instances () int32.
    """
    local_step = make_local_step(loss_fn, optimizer, ema_decay=ema_decay, ema_tau=ema_tau, exchange=exchange)
    # "none" returns each device's own state under a replicated spec: only the type check must be told
    mapped = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()),
                           check_vma=exchange != "none")
    return jax.jit(mapped, donate_argnums=(0,))
