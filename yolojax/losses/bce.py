"""Binary cross-entropy on logits, the classification loss of YOLOv8."""
from __future__ import annotations

import jax


def bce_with_logits(logits, targets):
    """Elementwise binary cross-entropy of sigmoid(logits) against soft targets, numerically stable.

    `loss = (1 - z) x - log sigmoid(x)`, which equals `-z log sigmoid(x) - (1 - z) log(1 - sigmoid(x))`; written
    with `log_sigmoid` (a smooth softplus) so that autodiff gives exactly `sigmoid(x) - z`, also at x = 0.

    Args:
      logits: (...) raw scores x.
      targets: (...) targets z in [0, 1], broadcastable against `logits`.
    Returns:
      (...) per-element loss, nats.
    """
    return (1 - targets) * logits - jax.nn.log_sigmoid(logits)
