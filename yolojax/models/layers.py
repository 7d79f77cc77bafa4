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
import numpy as np
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
# In half precision, C2f blocks of at most this many bottleneck channels train over 2x2 pixel blocks
# (`runs_on_pixel_blocks`), as do 3x3 stride-2 convolutions reading at most this many channels and a stem writing
# at most this many. Measured per 3x3 layer, forward + both gradients on an H200 (bench_wgrad.py --blocks): faster
# at 16 and 32 channels, slower at 64.
BLOCKS_MAX_CHANNELS = 32
# Inference (train=False) uses those layouts from this batch size on: larger batches gain as training does, while a
# small batch is launch-bound and pays for the extra layout changes and block kernels.
BLOCKS_MIN_INFERENCE_BATCH = 8


def shaped_param(module: nn.Module, name: str, init_fn, shape: tuple[int, ...], dtype=jnp.float32):
    """`module.param(name, init_fn, shape, dtype)`, checking an existing parameter against `shape` directly.

    Flax checks an existing parameter's shape by tracing its initializer (`jax.eval_shape`) at every apply; over
    the model's ~180 parameters that is about a quarter of the train step's trace time, paid on every compile."""
    if module.is_initializing() or not module.has_variable("params", name):
        return module.param(name, init_fn, shape, dtype)
    value = module.get_variable("params", name)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"parameter {'/'.join(module.scope.path + (name,))} has shape {tuple(value.shape)}, "
                         f"expected {tuple(shape)}")
    return value


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
        scale = shaped_param(self, "scale", nn.initializers.ones, (c,))
        bias = shaped_param(self, "bias", nn.initializers.zeros, (c,))
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


def to_pixel_blocks(x, size: int = 2):
    """(b, h, w, c) -> (b, h/size, size * w, c) for h, w divisible by size: each size x size pixel block as size^2
    consecutive columns, (row in block, column in block) in row-major order; reshaped to (b, h/size, w/size,
    size^2 c) it is space to depth. Per-pixel operations (1x1 convolutions, BatchNorm, activations) are unchanged on
    this layout; `Conv(blocks_in=..., blocks_out=...)` convolves it as the pixels it holds."""
    b, h, w, c = x.shape
    return x.reshape(b, h // size, size, w // size, size, c).transpose(0, 1, 3, 2, 4, 5).reshape(
        b, h // size, size * w, c)


def from_pixel_blocks(x):
    """The inverse of `to_pixel_blocks` (2x2 blocks): (b, h/2, 2 w, c) -> (b, h, w, c)."""
    b, h2, w4, c = x.shape
    return x.reshape(b, h2, w4 // 4, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h2, w4 // 2, c)


def _block_taps(stride: int, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Along one axis, which (block offset, position in block) each tap of a 3-wide 'same' kernel reads for each
    output position of a block, for a stride-`stride` convolution over blocks of `size` pixels (a block holds
    size / stride outputs: output p of block B is output pixel (size / stride) B + p; tap d reads input pixel
    size B + stride p + d).
    Returns select (offsets, size positions read, size // stride outputs, 3 taps) 0/1 and the padding (before,
    after) in blocks."""
    outputs = size // stride
    reads = [(divmod(stride * p + d, size), p, d + 1) for p in range(outputs) for d in (-1, 0, 1)]
    first, last = min(r[0][0] for r in reads), max(r[0][0] for r in reads)
    select = np.zeros((last - first + 1, size, outputs, 3), np.float32)
    for (offset, position), p, tap in reads:
        select[offset - first, position, p, tap] = 1
    return select, (-first, last)


def block_kernel(kernel, stride: int, size: int = 2):
    """A 3x3 kernel (3, 3, c_in, c_out) of a stride-`stride` 'same' convolution as the kernel of the stride-1
    convolution over size x size pixel blocks that gives the same sums: (k, k, size^2 c_in, (size / stride)^2 c_out),
    input channel (row, column in block) * c_in + i, output channel likewise. Returns it and the padding in blocks."""
    select, padding = _block_taps(stride, size)
    select = jnp.asarray(select, kernel.dtype)
    k, _, outputs, _ = select.shape
    blocks = jnp.einsum("aqpy,brsx,yxio->abqripso", select, select, kernel)
    return blocks.reshape(k, k, size * size * kernel.shape[2], outputs * outputs * kernel.shape[3]), padding


def _conv_blocks(blocks, kernel, padding):
    """Stride-1 convolution over blocks: (b, h', w', c_in') with a (k, k, c_in', c_out') kernel and (before, after)
    padding in blocks on both axes -> (b, h'', w'', c_out')."""
    return lax.conv_general_dilated(blocks, kernel, (1, 1), (padding, padding),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv3x3_on_pixel_blocks(x, kernel):
    """conv2d_same(x, kernel, 1) for a 3x3 kernel with x and the result in `to_pixel_blocks` layout: one stride-1
    convolution over the blocks, whose 4x wider channels get cuDNN's faster kernels than narrow ones at full size.
    x (b, h/2, 2 w, c_in) -> (b, h/2, 2 w, c_out)."""
    b, h2, w4, c = x.shape
    kernel, padding = block_kernel(kernel, 1)
    out = _conv_blocks(x.reshape(b, h2, w4 // 4, 4 * c), kernel, padding)
    return out.reshape(b, h2, w4, out.shape[-1] // 4)


def conv3x3_stride2_by_blocks(x, kernel, min_input_channels: int = 1, *, blocks_in: bool = False,
                              blocks_out: bool = False):
    """conv2d_same(x, kernel, 2) for a 3x3 kernel, computed as a 2x2 stride-1 convolution over pixel blocks (space
    to depth), zero channels up to min_input_channels. x (b, h, w, c_in), h and w even, kernel (3, 3, c_in, c_out)
    -> (b, h/2, w/2, c_out); blocks_in: x in `to_pixel_blocks` layout (b, h/2, 2 w, c_in); blocks_out (h, w
    divisible by 4): the result in it, (b, h/4, w, c_out), from one convolution over 4x4 blocks with 4 c_out
    outputs."""
    if blocks_in and blocks_out:
        raise ValueError("conv3x3_stride2_by_blocks: blocks in or blocks out, not both")
    size = 4 if blocks_out else 2
    if blocks_in:
        b, h2, w4, c = x.shape
        blocks = x.reshape(b, h2, w4 // 4, 4 * c)
    else:
        b, h, w, c = x.shape
        blocks = to_pixel_blocks(x, size).reshape(b, h // size, w // size, size * size * c)
    kernel, padding = block_kernel(kernel, 2, size)
    extra = -blocks.shape[-1] % min_input_channels
    if extra:
        blocks = jnp.pad(blocks, ((0, 0), (0, 0), (0, 0), (0, extra)))
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, extra), (0, 0)))
    out = _conv_blocks(blocks, kernel, padding)
    if blocks_out:
        b, h4, w4, c4 = out.shape
        return out.reshape(b, h4, 4 * w4, c4 // 4)
    return out


class Conv(nn.Module):
    """Square convolution, 'same' padding, no bias, computed in `dtype` (params float32): nn.Conv's variables
    (`kernel` (k, k, c_in, features)) and result; half-precision stems reshaped for cuDNN (HALF_MIN_INPUT_CHANNELS).
    blocks_in / blocks_out: x / the result in `to_pixel_blocks` layout (both: 1x1, or 3x3 stride 1; one: 3x3 stride
    2, see `conv3x3_stride2_by_blocks`). stride2_by_blocks: whether a half-precision 3x3 stride-2 convolution
    reading at most BLOCKS_MAX_CHANNELS channels (pixels in and out) computes over 2x2 blocks inside."""

    features: int
    kernel: int = 1
    stride: int = 1
    dtype: Any = jnp.float32
    blocks_in: bool = False
    blocks_out: bool = False
    stride2_by_blocks: bool = True

    @nn.compact
    def __call__(self, x):
        kernel = shaped_param(self, "kernel", torch_conv_init, (self.kernel, self.kernel, x.shape[-1], self.features))
        return self.convolve(x, kernel)

    def convolve(self, x, kernel, kernel_layout: str = "HWIO"):
        """This module's convolution of x with `kernel` given in `kernel_layout`: "HWIO" (k, k, c_in, features) as
        the parameter, or "OHWI" (features, k, k, c_in), as `yolojax.models.inference` keeps folded kernels. x
        (b, h, w, c_in) -> (b, h/stride, w/stride, features), in `dtype` (either side in `to_pixel_blocks` layout
        where blocks_in / blocks_out say so). The pixel-block paths build their kernels from the HWIO form."""
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self._runs_by_blocks(x):
            hwio = kernel.transpose(1, 2, 3, 0) if kernel_layout == "OHWI" else kernel
            if self.blocks_in or self.blocks_out:
                return self._on_blocks(x, hwio)
            return conv3x3_stride2_by_blocks(x, hwio, HALF_MIN_INPUT_CHANNELS)
        half = jnp.dtype(self.dtype).itemsize == 2
        min_input_channels = HALF_MIN_INPUT_CHANNELS if half and x.shape[-1] < HALF_MIN_INPUT_CHANNELS else 1
        return conv2d_same(x, kernel, self.stride, min_input_channels, kernel_layout)

    def _runs_by_blocks(self, x) -> bool:
        """Whether this convolution builds a block kernel: x or the result in blocks, or (stride2_by_blocks) a
        half-precision 3x3 stride-2 convolution reading at most BLOCKS_MAX_CHANNELS channels of even h, w."""
        if self.blocks_in or self.blocks_out:
            return True
        return (self.stride2_by_blocks and jnp.dtype(self.dtype).itemsize == 2 and self.kernel == 3 and self.stride == 2
                and x.shape[-1] <= BLOCKS_MAX_CHANNELS and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0)

    def _on_blocks(self, x, kernel):
        both = self.blocks_in and self.blocks_out
        if both and self.kernel == 1:
            return conv2d_same(x, kernel)
        if both and (self.kernel, self.stride) == (3, 1):
            return conv3x3_on_pixel_blocks(x, kernel)
        if not both and (self.kernel, self.stride) == (3, 2):
            return conv3x3_stride2_by_blocks(x, kernel, HALF_MIN_INPUT_CHANNELS, blocks_in=self.blocks_in,
                                             blocks_out=self.blocks_out)
        raise ValueError(f"Conv over pixel blocks (in {self.blocks_in}, out {self.blocks_out}): not for a "
                         f"{self.kernel}x{self.kernel} stride-{self.stride} kernel")


class ConvBNAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> SiLU, 'same' padding k // 2. (b, h, w, c_in) -> (b, h/s, w/s, features)."""

    features: int
    kernel: int = 1
    stride: int = 1
    dtype: Any = jnp.float32
    blocks_in: bool = False  # as Conv's (BatchNorm is per pixel: the same on either layout)
    blocks_out: bool = False
    stride2_by_blocks: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        x = Conv(self.features, self.kernel, self.stride, dtype=self.dtype, blocks_in=self.blocks_in,
                 blocks_out=self.blocks_out, stride2_by_blocks=self.stride2_by_blocks, name="conv")(x)
        return BatchNorm(dtype=self.dtype, silu=True, name="bn")(x, train)


class Bottleneck(nn.Module):
    """Two 3x3 ConvBNAct with an optional residual add (only when input and output channels agree)."""

    features: int
    shortcut: bool = True
    dtype: Any = jnp.float32
    on_blocks: bool = False  # x and the result in `to_pixel_blocks` layout

    @nn.compact
    def __call__(self, x, train: bool):
        blocks = {"blocks_in": self.on_blocks, "blocks_out": self.on_blocks}
        y = ConvBNAct(self.features, 3, dtype=self.dtype, **blocks, name="cv1")(x, train)
        y = ConvBNAct(self.features, 3, dtype=self.dtype, **blocks, name="cv2")(y, train)
        return x + y if self.shortcut and x.shape[-1] == self.features else y


def runs_on_pixel_blocks(x, channels: int, dtype: Any, train: bool) -> bool:
    """Whether layers of `channels` channels on x's (b, h, w) run in `to_pixel_blocks` layout: in half precision, at
    most BLOCKS_MAX_CHANNELS of them, even h, w, and in training or from BLOCKS_MIN_INFERENCE_BATCH images on.
    cuDNN runs narrow 3x3 convolutions at large sizes on slow kernels; over 2x2 blocks the same convolution has 4x
    the channels on a quarter of the pixels."""
    return (jnp.dtype(dtype).itemsize == 2 and channels <= BLOCKS_MAX_CHANNELS
            and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0 and (train or x.shape[0] >= BLOCKS_MIN_INFERENCE_BATCH))


class C2f(nn.Module):
    """CSP block with two halves: split cv1's output, chain `repeats` bottlenecks on the second half, concatenate
    every intermediate and fuse with a 1x1 conv. (b, h, w, c_in) -> (b, h, w, features). on_blocks: "auto"
    (`runs_on_pixel_blocks`), True or False: compute in `to_pixel_blocks` layout (the same sums, other order)."""

    features: int
    repeats: int = 1
    shortcut: bool = False
    dtype: Any = jnp.float32
    on_blocks: bool | str = "auto"

    @nn.compact
    def __call__(self, x, train: bool):
        hidden = self.features // 2
        on_blocks = (runs_on_pixel_blocks(x, hidden, self.dtype, train) if self.on_blocks == "auto"
                     else bool(self.on_blocks))
        if on_blocks:
            x = to_pixel_blocks(x)
        y = ConvBNAct(2 * hidden, 1, dtype=self.dtype, name="cv1")(x, train)
        parts = [y[..., :hidden], y[..., hidden:]]
        for i in range(self.repeats):
            parts.append(Bottleneck(hidden, self.shortcut, dtype=self.dtype, on_blocks=on_blocks,
                                    name=f"m_{i}")(parts[-1], train))
        y = ConvBNAct(self.features, 1, dtype=self.dtype, name="cv2")(jnp.concatenate(parts, axis=-1), train)
        return from_pixel_blocks(y) if on_blocks else y


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
