"""RPN anchor boxes: identical to torchvision's AnchorGenerator, values and order."""
import numpy as np
import pytest

from yolojax.ops.anchors import rpn_cell_anchors, rpn_grid_anchors


def test_cell_anchors_hand_computed():
    # size 32, ratio 1 -> a 32 x 32 box; ratio 2 (h/w) -> w = 32/sqrt2 = 22.63, h = 45.25 -> halves 11.31, 22.63
    out = np.asarray(rpn_cell_anchors((32,), (1.0, 2.0)))
    np.testing.assert_array_equal(out, [[-16, -16, 16, 16], [-11, -23, 11, 23]])


@pytest.mark.parity
@pytest.mark.parametrize("image_hw, sizes, ratios", [
    ((256, 320), ((32, 64), (128,)), ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0))),
    ((800, 1216), ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
])
def test_grid_anchors_match_torchvision(image_hw, sizes, ratios):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    strides = [8, 16, 32, 64, 128][:len(sizes)]
    shapes = [(image_hw[0] // s, image_hw[1] // s) for s in strides]
    strides = [(image_hw[0] // h, image_hw[1] // w) for h, w in shapes]  # the reference's rule
    feats = [torch.zeros(1, 1, h, w) for h, w in shapes]
    images = ImageList(torch.zeros(1, 3, *image_hw), [image_hw])
    expected = AnchorGenerator(sizes, ratios)(images, feats)[0].numpy()
    anchors, counts = rpn_grid_anchors(shapes, strides, sizes, ratios)
    np.testing.assert_array_equal(np.asarray(anchors), expected)
    assert counts == tuple(h * w * len(s) * len(r) for (h, w), s, r in zip(shapes, sizes, ratios))


def test_mismatched_levels_raise():
    with pytest.raises(ValueError, match="rpn_grid_anchors"):
        rpn_grid_anchors([(2, 2)], [8, 16], [(32,)], [(1.0,)])
