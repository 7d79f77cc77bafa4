"""Weights for checks and benchmarks of inference paths that fold BatchNorm (export, predict)."""
from __future__ import annotations

import jax
import numpy as np


def batchnorm_off_identity(variables: dict, rng: np.random.Generator) -> dict:
    """`variables` with every BatchNorm's running statistics, scales and biases moved off their initial values
    (mean and bias + N(0, 0.5), var and scale ~ U(0.5, 1.5)), so that folding BatchNorm into a convolution changes
    the kernel and gives it a bias, as trained weights do."""

    def perturb(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['mean']") or name.endswith("['bias']"):
            return leaf + rng.normal(0, 0.5, leaf.shape).astype(np.float32)
        if name.endswith("['var']") or name.endswith("['scale']"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(perturb, variables)
