"""The training state: one pytree holding everything a step reads and writes (and a checkpoint saves)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrainState:
    """All arrays; replicated over devices. Counters are int32 scalars.

    iteration:      batches seen (the reference's `ni`), including skipped ones
    last_opt_step:  iteration of the last optimizer step (-1 before the first)
    params:         fp32 model parameters
    model_state:    non-param collections, e.g. {"batch_stats": ...} (running BN statistics)
    opt_state:      optax state (fp32)
    grad_accum:     gradients summed since the last optimizer step (fp32, structure of params)
    ema:            EMA of {"params": ..., **model_state} (see yolojax.train.ema)
    ema_updates:    optimizer steps taken (the EMA's update count)
    rng:            base PRNG key; the step's key is fold_in(rng, iteration)
    nonfinite_total, nonfinite_run: non-finite losses seen in total / in a row (their updates were skipped)
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

    def variables(self) -> dict:
        """Model variables of the live (non-EMA) model: {"params": ..., **model_state}."""
        return {"params": self.params, **self.model_state}

    def ema_variables(self) -> dict:
        return self.ema


def split_variables(variables: dict) -> tuple[Any, dict]:
    """{"params": p, "batch_stats": s, ...} -> (p, {"batch_stats": s, ...})."""
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return variables["params"], model_state


def create_state(variables: dict, optimizer: Any, rng: jax.Array) -> TrainState:
    """Fresh state at iteration 0 from initial model variables; the EMA starts as a copy of them."""
    variables = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating)
                             else jnp.asarray(x), variables)
    params, model_state = split_variables(variables)
    def counter(value: int = 0) -> jax.Array:  # a fresh buffer each: donated buffers must be distinct
        return jnp.full((), value, jnp.int32)

    return TrainState(
        iteration=counter(), last_opt_step=counter(-1), params=params, model_state=model_state,
        opt_state=optimizer.init(params), grad_accum=jax.tree.map(jnp.zeros_like, params),
        ema=jax.tree.map(jnp.copy, {"params": params, **model_state}), ema_updates=counter(),
        rng=jnp.asarray(rng), nonfinite_total=counter(), nonfinite_run=counter())
