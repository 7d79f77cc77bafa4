"""The training state: one pytree holding everything a step reads and writes (and a checkpoint saves).

The parameters, their gradient sum, the optimizer's buffers and the EMA are flat fp32 buffers (yolojax.ops.flat);
`VariablesLayout` maps them to and from the model's variables.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from yolojax.ops.flat import FlatLayout
from yolojax.train.optim import NUM_GROUPS, param_groups


@dataclasses.dataclass(frozen=True)
class VariablesLayout:
    """The flat layouts of a model's variables (static, hashable).

    params: the parameters' layout, leaves sorted by optimizer group (decay, norm, bias), so each group is one
    contiguous range of the buffer and `group_ends` says where each ends; model_state: the other collections
    (e.g. {"batch_stats": ...}), every leaf floating-point.
    """

    params: FlatLayout
    model_state: FlatLayout
    group_ends: tuple[int, ...]

    @classmethod
    def of(cls, variables: dict) -> VariablesLayout:
        params, model_state = split_variables(variables)
        groups = jax.tree.leaves(param_groups(params))
        order = sorted(range(len(groups)), key=lambda i: groups[i])  # stable: tree order inside a group
        params_layout = FlatLayout.of(params, order)
        for path, leaf in jax.tree_util.tree_flatten_with_path(model_state)[0]:
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise ValueError(f"model state {jax.tree_util.keystr(path)} is {leaf.dtype}: the training state "
                                 f"keeps floating-point model state only")
        return cls(params_layout, FlatLayout.of(model_state), params_layout.ends(groups.__getitem__, NUM_GROUPS))

    def variables(self, params: Any, model_state: Any) -> dict:
        """Flat buffers (jax or numpy) -> {"params": ..., **model_state} (slices, in the buffers' dtype; works inside
        jit)."""
        return {"params": self.params.unflatten(params, params.dtype),
                **self.model_state.unflatten(model_state, model_state.dtype)}


@functools.partial(jax.jit, static_argnums=0)
def _variables_on_device(layout: VariablesLayout, params: jax.Array, model_state: jax.Array) -> dict:
    return layout.variables(params, model_state)


@struct.dataclass
class TrainState:
    """All arrays; replicated over devices. Counters are int32 scalars.

    iteration:      batches seen (the reference's `ni`), including skipped ones
    last_opt_step:  iteration of the last optimizer step (-1 before the first)
    params:         (P,) fp32 model parameters, flat (`layout.params`)
    model_state:    (S,) fp32 non-param collections (running BN statistics), flat (`layout.model_state`)
    opt_state:      optax state over the flat parameters (fp32)
    grad_accum:     (P,) gradients summed since the last optimizer step
    ema:            {"params": (P,), "model_state": (S,)}: the EMA of both (see yolojax.train.ema)
    ema_updates:    optimizer steps taken (the EMA's update count)
    rng:            base PRNG key; the step's key is fold_in(rng, iteration)
    nonfinite_total, nonfinite_run: non-finite losses seen in total / in a row (their updates were skipped)
    layout:         where each variable sits in the flat buffers (static)
    """

    iteration: Any
    last_opt_step: Any
    params: Any
    model_state: Any
    opt_state: Any
    grad_accum: Any
    ema: Any
    ema_updates: Any
    rng: Any
    nonfinite_total: Any
    nonfinite_run: Any
    layout: VariablesLayout = struct.field(pytree_node=False)

    def variables(self) -> dict:
        """Variables of the live (non-EMA) model: {"params": ..., **model_state}. On device arrays this runs one
        jitted program: in a job of several processes, call it on `distributed.process_local(state)` (or on every
        process), as on global arrays the program is a collective."""
        return self._tree(self.params, self.model_state)

    def ema_variables(self) -> dict:
        """Variables of the EMA model (what validation and export use)."""
        return self._tree(self.ema["params"], self.ema["model_state"])

    def _tree(self, params: Any, model_state: Any) -> dict:
        if isinstance(params, jax.Array):
            return _variables_on_device(self.layout, params, model_state)  # one dispatch, not one per leaf
        return self.layout.variables(params, model_state)


def split_variables(variables: dict) -> tuple[Any, dict]:
    """{"params": p, "batch_stats": s, ...} -> (p, {"batch_stats": s, ...})."""
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return variables["params"], model_state


def create_state(variables: dict, optimizer: Any, rng: jax.Array) -> TrainState:
    """Fresh state at iteration 0 from initial model variables; the EMA starts as a copy of them. `optimizer` works
    on the flat parameters of `VariablesLayout.of(variables)` (see yolojax.train.optim.build_optimizer)."""
    layout = VariablesLayout.of(variables)
    params, model_state = split_variables(variables)
    params, model_state = layout.params.flatten(params), layout.model_state.flatten(model_state)

    def counter(value: int = 0) -> jax.Array:  # a fresh buffer each: donated buffers must be distinct
        return jnp.full((), value, jnp.int32)

    return TrainState(
        iteration=counter(), last_opt_step=counter(-1), params=params, model_state=model_state,
        opt_state=optimizer.init(params), grad_accum=jnp.zeros_like(params),
        ema={"params": jnp.copy(params), "model_state": jnp.copy(model_state)}, ema_updates=counter(),
        rng=jnp.asarray(rng), nonfinite_total=counter(), nonfinite_run=counter(), layout=layout)
