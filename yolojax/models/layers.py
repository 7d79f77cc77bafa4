"""YOLOv8 building blocks as Flax linen modules, NHWC.

Submodule names mirror the reference's attribute names (`conv`, `bn`, `cv1`, `m_0`, ...) so that weight import is a
mechanical rename: a PyTorch key `a.b.0.conv.weight` lives at flax path `a_b_0/conv/kernel` (see
`yolojax.convert.mapping`).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

# PyTorch's default Conv2d weight init (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.97  # flax keeps `momentum` of the old value; the reference's BatchNorm momentum is 0.03


def batch_moments(x, axis_name: str | None = None):
    """Per-channel mean and biased variance of x (..., c) over every other axis, in float32 (at least), and the
    element count n per channel. axis_name: pool the moments over that mapped axis (n then counts all devices).
    Returns (mean (c,), var (c,), n int)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    moments = jnp.stack([x.mean(axes), jnp.square(x).mean(axes)])
    count = math.prod(x.shape[:-1])
    if axis_name is not None:
        moments = lax.pmean(moments, axis_name)
        count *= lax.axis_size(axis_name)
    mean, mean_sq = moments[0], moments[1]
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0), count


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last, as the reference's nn.BatchNorm2d. (..., c) -> (..., c) in `dtype`.

    train=True normalizes with the batch mean and biased variance and updates the running statistics as torch does:
      mean <- momentum * mean + (1 - momentum) * batch mean
      var  <- momentum * var + (1 - momentum) * batch variance * n / (n - 1)      (unbiased; n elements per channel)
    train=False normalizes with the running statistics. `momentum` keeps the old value's share (flax's convention:
    the reference's 0.03 is 0.97). axis_name: pool the batch statistics over that mapped axis (SyncBatchNorm).
    Variables (flax BatchNorm's names): params scale, bias (c,); batch_stats mean, var (c,), float32.
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        if not train:
            mean, var = running_mean.value, running_var.value
        elif self.is_initializing():
            mean, var, _ = batch_moments(x)
        else:
            mean, var, count = batch_moments(x, self.axis_name)
            keep = self.momentum
            running_mean.value = keep * running_mean.value + (1 - keep) * mean
            running_var.value = keep * running_var.value + (1 - keep) * var * (count / max(count - 1, 1))
        y = (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype)


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU, 'same' padding k // 2. (b, h, w, c_in) -> (b, h/s, w/s, features)."""

    features: int
    kernel: int = 1
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        pad = self.kernel // 2
        x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                    padding=((pad, pad), (pad, pad)), use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=torch_conv_init, name="conv")(x)
        x = BatchNorm(dtype=self.dtype, name="bn")(x, train)
        return nn.silu(x)


class Bottleneck(nn.Module):
    """Two 3x3 ConvBNAct with an optional residual add (only when input and output channels agree)."""

    features: int
    shortcut: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = ConvBNAct(self.features, 3, dtype=self.dtype, name="cv1")(x, train)
        y = ConvBNAct(self.features, 3, dtype=self.dtype, name="cv2")(y, train)
        return x + y if self.shortcut and x.shape[-1] == self.features else y


class C2f(nn.Module):
    """CSP block with two halves: split cv1's output, chain `repeats` bottlenecks on the second half, concatenate
    every intermediate and fuse with a 1x1 conv. (b, h, w, c_in) -> (b, h, w, features)."""

    features: int
    repeats: int = 1
    shortcut: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        hidden = self.features // 2
        y = ConvBNAct(2 * hidden, 1, dtype=self.dtype, name="cv1")(x, train)
        parts = [y[..., :hidden], y[..., hidden:]]
        for i in range(self.repeats):
            parts.append(Bottleneck(hidden, self.shortcut, dtype=self.dtype, name=f"m_{i}")(parts[-1], train))
        return ConvBNAct(self.features, 1, dtype=self.dtype, name="cv2")(jnp.concatenate(parts, axis=-1), train)


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 stride-1 max pools, concatenated. Keeps (h, w)."""

    features: int
    pool: int = 5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = ConvBNAct(x.shape[-1] // 2, 1, dtype=self.dtype, name="cv1")(x, train)
        pad = self.pool // 2
        parts = [y]
        for _ in range(3):
            parts.append(nn.max_pool(parts[-1], (self.pool, self.pool), strides=(1, 1),
                                     padding=((pad, pad), (pad, pad))))
        return ConvBNAct(self.features, 1, dtype=self.dtype, name="cv2")(jnp.concatenate(parts, axis=-1), train)


def upsample_nearest2x(x):
    """Nearest-neighbour 2x upsampling: (b, h, w, c) -> (b, 2h, 2w, c)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
