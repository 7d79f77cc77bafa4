"""Training losses."""
from yolojax.losses.bbox import bbox_loss, dfl_cross_entropy, dfl_expectation, dfl_loss, dfl_statistics
from yolojax.losses.bce import bce_with_logits
from yolojax.losses.detection import detection_loss

__all__ = ["bbox_loss", "bce_with_logits", "detection_loss", "dfl_cross_entropy", "dfl_expectation", "dfl_loss",
           "dfl_statistics"]
