"""Label assignment: which anchors learn which ground-truth boxes."""
from yolojax.assign.tal import task_aligned_assign

__all__ = ["task_aligned_assign"]
