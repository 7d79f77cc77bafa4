"""YOLOv8 building blocks as Flax linen modules, NHWC.

Submodule names mirror the reference's attribute names (`conv`, `bn`, `cv1`, `m_0`, ...) so that weight import is a
mechanical rename: a PyTorch key `a.b.0.conv.weight` lives at flax path `a_b_0/conv/kernel` (see
`yolojax.convert.mapping`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's default Conv2d weight init (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.97  # flax keeps `momentum` of the old value; the reference's BatchNorm momentum is 0.03


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
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype,
                         param_dtype=jnp.float32, name="bn")(x)
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
