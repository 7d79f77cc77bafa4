"""The Region Proposal Network's head (a Flax module). Its proposal layer is `yolojax.ops.proposals`, its training
targets `yolojax.assign.rpn`."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by all levels, then 1x1 convs to objectness logits and box deltas.

    Attributes:
      num_anchors: anchors per location (len(sizes) * len(aspect_ratios), the same on every level).
      dtype: compute dtype; parameters are float32. Weights ~ N(0, 0.01), biases 0, as in the reference.

    Call with a list of (b, h_l, w_l, c) maps (same c on every level). Returns
      objectness: (b, a) float32 logits, deltas: (b, a, 4) float32, with a = sum(h_l * w_l * num_anchors) in the
      order of `yolojax.ops.anchors.rpn_grid_anchors` (level, row-major location, anchor).
    """

    num_anchors: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]):
        init = dict(kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.zeros, dtype=self.dtype,
                    param_dtype=jnp.float32)
        channels = features[0].shape[-1]
        conv = nn.Conv(channels, (3, 3), padding=1, name="conv", **init)
        logits_conv = nn.Conv(self.num_anchors, (1, 1), name="cls_logits", **init)
        deltas_conv = nn.Conv(self.num_anchors * 4, (1, 1), name="bbox_pred", **init)
        logits, deltas = [], []
        for x in features:
            t = nn.relu(conv(x))
            b = x.shape[0]
            logits.append(logits_conv(t).reshape(b, -1))
            deltas.append(deltas_conv(t).reshape(b, -1, 4))
        return (jnp.concatenate(logits, axis=1).astype(jnp.float32),
                jnp.concatenate(deltas, axis=1).astype(jnp.float32))
