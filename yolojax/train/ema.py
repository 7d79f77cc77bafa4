"""Exponential moving average of the model variables (params and BatchNorm statistics).

As the reference's ModelEMA (ultralytics/utils/torch_utils.py): after the n-th optimizer step,
    d_n = decay * (1 - exp(-n / tau)),    ema <- d_n * ema + (1 - d_n) * model
for every floating-point leaf of the variables (integer leaves are copied). The ramp keeps early EMA weights close to
the fast-moving model. Validation and exported weights use the EMA.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay(updates: Any, decay: float = 0.9999, tau: float = 2000.0) -> Any:
    """d_n for update count n (>= 1): decay * (1 - exp(-n / tau)) (as -expm1, accurate in float32 for small n)."""
    return decay * -jnp.expm1(-jnp.asarray(updates, jnp.float32) / tau)


def ema_update(ema_variables: Any, variables: Any, updates: Any, decay: float = 0.9999, tau: float = 2000.0) -> Any:
    """The EMA after the `updates`-th optimizer step (`updates` counts this one).

    ema_variables, variables: pytrees of the same structure (e.g. {"params": ..., "batch_stats": ...}), fp32.
    """
    d = ema_decay(updates, decay, tau)

    def leaf(e, v):
        if not jnp.issubdtype(e.dtype, jnp.floating):
            return v
        return (d * e + (1.0 - d) * v.astype(e.dtype)).astype(e.dtype)

    return jax.tree.map(leaf, ema_variables, variables)
