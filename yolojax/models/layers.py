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

from yolojax.ops.norm import batch_moments, batch_norm_silu
from yolojax.ops.pool import max_pool_same

# PyTorch's default Conv2d weight init (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.97  # flax keeps `momentum` of the old value; the reference's BatchNorm momentum is 0.03
# Half-precision convolutions with fewer input channels than this (the 3-channel stem) are reshaped for cuDNN: it
# runs a 3-channel bf16 convolution on generic kernels plus channel-padding kernels, several times slower than the
# tensor-core kernels it picks for a multiple of 8 channels. A 3x3 stride-2 stem becomes a 2x2 stride-1
# convolution over 2x2 pixel blocks (12 channels, half the padded bytes of 8 channels at full size); any other
# gets zero channels. Both give the same sums (zeros add exact zeros).
HALF_MIN_INPUT_CHANNELS = 8


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last, as the reference's nn.BatchNorm2d. (..., c) -> (..., c) in `dtype`.

    train=True normalizes with the batch mean and biased variance and updates the running statistics as torch does:
      mean <- momentum * mean + (1 - momentum) * batch mean
      var  <- momentum * var + (1 - momentum) * batch variance * n / (n - 1)      (unbiased; n elements per channel)
    train=False normalizes with the running statistics. `momentum` keeps the old value's share (flax's convention:
    the reference's 0.03 is 0.97). axis_name: pool the batch statistics over that mapped axis (SyncBatchNorm).
    Variables (flax BatchNorm's names): params scale, bias (c,); batch_stats mean, var (c,), float32.
    silu=True applies SiLU to the result; in training without axis_name both run as one function with a written-out
    gradient (`yolojax.ops.norm.batch_norm_silu`, computed in float32 and rounded once).
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    dtype: Any = jnp.float32
    axis_name: str | None = None
    silu: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        fused = train and self.silu and self.axis_name is None and not self.is_initializing()
        if fused:
            y, mean, var = batch_norm_silu(x.astype(self.dtype), scale, bias, self.epsilon)
            count = math.prod(x.shape[:-1])
        elif not train:
            mean, var = running_mean.value, running_var.value
        elif self.is_initializing():
            mean, var, _ = batch_moments(x)
        else:
            mean, var, count = batch_moments(x, self.axis_name)
        if train and not self.is_initializing():
            keep = self.momentum
            running_mean.value = keep * running_mean.value + (1 - keep) * mean
            running_var.value = keep * running_var.value + (1 - keep) * var * (count / max(count - 1, 1))
        if fused:
            return y
        y = ((x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias).astype(self.dtype)
        return nn.silu(y) if self.silu else y


def conv2d_same(x, kernel, stride: int = 1, min_input_channels: int = 1, kernel_layout: str = "HWIO"):
    """Convolution with 'same' padding k // 2, no bias. x (b, h, w, c_in), kernel (k, k, c_in, c_out) (or in
    `kernel_layout`, e.g. "OHWI") -> (b, h/stride, w/stride, c_out). With c_in < min_input_channels, x and kernel get
    zero input channels up to it (the same result; see HALF_MIN_INPUT_CHANNELS)."""
    extra = min_input_channels - x.shape[-1]
    if extra > 0:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
        widths = [(0, 0)] * 4
        widths[kernel_layout.index("I")] = (0, extra)
        kernel = jnp.pad(kernel, widths)
    pad = kernel.shape[kernel_layout.index("H")] // 2
    return lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                    dimension_numbers=("NHWC", kernel_layout, "NHWC"))


def conv3x3_stride2_by_blocks(x, kernel, min_input_channels: int = 1):
    """conv2d_same(x, kernel, 2) for a 3x3 kernel and even h, w, computed as a 2x2 stride-1 convolution over 2x2
    pixel blocks (space to depth: channel (dy * 2 + dx) * c_in + i), zero channels up to min_input_channels.
    x (b, h, w, c_in), kernel (3, 3, c_in, c_out) -> (b, h/2, w/2, c_out)."""
    b, h, w, c = x.shape
    blocks = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)
    # output row i reads input rows 2i-1 (block i-1, row 1), 2i (block i, row 0), 2i+1 (block i, row 1)
    taps = ((0, 1, 0), (1, 0, 1), (1, 1, 2))  # (block offset, row in block, kernel row), the same for columns
    block_kernel = jnp.zeros((2, 2, 2, 2) + kernel.shape[2:], kernel.dtype)
    for by, py, ky in taps:
        for bx, px, kx in taps:
            block_kernel = block_kernel.at[by, bx, py, px].set(kernel[ky, kx])
    block_kernel = block_kernel.reshape(2, 2, 4 * c, kernel.shape[-1])
    extra = (-4 * c) % min_input_channels
    if extra:
        blocks = jnp.pad(blocks, ((0, 0), (0, 0), (0, 0), (0, extra)))
        block_kernel = jnp.pad(block_kernel, ((0, 0), (0, 0), (0, extra), (0, 0)))
    return lax.conv_general_dilated(blocks, block_kernel, (1, 1), ((1, 0), (1, 0)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """Square convolution, 'same' padding, no bias, computed in `dtype` (params float32): nn.Conv's variables
    (`kernel` (k, k, c_in, features)) and result; half-precision stems reshaped for cuDNN (HALF_MIN_INPUT_CHANNELS)."""

    features: int
    kernel: int = 1
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", torch_conv_init, (self.kernel, self.kernel, x.shape[-1], self.features),
                            jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if jnp.dtype(self.dtype).itemsize != 2 or x.shape[-1] >= HALF_MIN_INPUT_CHANNELS:
            return conv2d_same(x, kernel, self.stride)
        if self.kernel == 3 and self.stride == 2 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
            return conv3x3_stride2_by_blocks(x, kernel, HALF_MIN_INPUT_CHANNELS)
        return conv2d_same(x, kernel, self.stride, HALF_MIN_INPUT_CHANNELS)


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU, 'same' padding k // 2. (b, h, w, c_in) -> (b, h/s, w/s, features)."""

    features: int
    kernel: int = 1
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = Conv(self.features, self.kernel, self.stride, dtype=self.dtype, name="conv")(x)
        return BatchNorm(dtype=self.dtype, silu=True, name="bn")(x, train)


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
        for _ in range(3):  # the plain pool outside training: what export converters know
            parts.append(max_pool_same(parts[-1], self.pool) if train else nn.max_pool(
                parts[-1], (self.pool, self.pool), strides=(1, 1), padding=((pad, pad), (pad, pad))))
        return ConvBNAct(self.features, 1, dtype=self.dtype, name="cv2")(jnp.concatenate(parts, axis=-1), train)


def upsample_nearest2x(x):
    """Nearest-neighbour 2x upsampling: (b, h, w, c) -> (b, 2h, 2w, c)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
