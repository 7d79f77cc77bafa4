"""yolojax.assign.tal: the Task-Aligned Assigner's rules on hand-built cases, plus jit / vmap / static-shape use.

Parity with the reference on random realistic inputs is in tests/test_parity_core.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.assign import task_aligned_assign
from yolojax.assign.tal import (
    anchors_in_boxes,
    resolve_multiple_boxes,
    topk_mask,
    topk_mask_walk,
)
from yolojax.ops.anchors import make_anchors

NC = 3
assign_jit = jax.jit(task_aligned_assign, static_argnames=("num_classes", "topk"))


def grid_anchors():
    """(64, 2) anchor centres of one 8x8 level of stride 8 (a 64x64 image), pixels: x = 4 + 8i, y = 4 + 8j."""
    points, strides = make_anchors([(8, 8)], (8,))
    return points * strides


def random_case(seed, b=2, m=5, n_real=(3, 0)):
    """Random predictions on the 8x8 grid and padded ground truth with `n_real[i]` real rows in image i."""
    rng = np.random.default_rng(seed)
    anchors = np.asarray(grid_anchors())
    scores = rng.uniform(0.01, 0.99, size=(b, 64, NC)).astype(np.float32)
    ltrb = rng.uniform(2, 30, size=(b, 64, 4)).astype(np.float32)
    pd = np.concatenate([anchors - ltrb[..., :2], anchors + ltrb[..., 2:]], -1)
    xy = rng.uniform(0, 40, size=(b, m, 2))
    gt = np.concatenate([xy, xy + rng.uniform(8, 24, size=(b, m, 2))], -1).astype(np.float32)
    labels = rng.integers(0, NC, size=(b, m, 1)).astype(np.int32)
    mask = np.arange(m)[None, :, None] < np.asarray(n_real)[:, None, None]
    gt[~mask[..., 0]] = 0
    labels[~mask[..., 0]] = 0
    return scores, pd, anchors, labels, gt, mask


def test_anchor_on_box_border_is_not_inside():
    # box [4, 4, 36, 36]: anchors at x or y = 4 or 36 lie on its border; 12, 20, 28 are strictly inside
    inside = np.asarray(anchors_in_boxes(grid_anchors(), jnp.array([[[4.0, 4.0, 36.0, 36.0]]])))[0, 0]
    expected = {8 * j + i for j in (1, 2, 3) for i in (1, 2, 3)}
    assert set(np.flatnonzero(inside)) == expected


@pytest.mark.parametrize("select", [topk_mask, topk_mask_walk])
def test_topk_picks_largest_metric(select):
    metric = jnp.array([[[0.0, 3.0, 1.0, 2.0, 0.5]]])
    picked = select(metric, jnp.array([[True]]), topk=2)
    np.testing.assert_array_equal(np.asarray(picked)[0, 0], [False, True, False, True, False])


@pytest.mark.parametrize("select", [topk_mask, topk_mask_walk])
def test_topk_ties_go_to_lowest_anchor_index(select):
    metric = jnp.array([[[0.0, 0.0, 5.0, 0.0, 0.0]]])
    picked = select(metric, jnp.array([[True]]), topk=3)
    np.testing.assert_array_equal(np.asarray(picked)[0, 0], [True, True, True, False, False])


@pytest.mark.parametrize("select", [topk_mask, topk_mask_walk])
def test_topk_of_padded_row_selects_nothing(select):
    # the reference sets a padded row's picks to anchor 0, which then counts as picked more than once and is dropped
    metric = jnp.array([[[0.0, 3.0, 1.0, 2.0]]])
    picked = select(metric, jnp.array([[False]]), topk=2)
    assert not np.asarray(picked).any()


def test_topk_walk_equals_sort_with_many_ties():
    # values on a coarse grid (many ties, many zeros) in rows of a realistic length
    metric = jnp.asarray(np.random.default_rng(0).integers(0, 4, size=(2, 5, 8400)) * 0.25, jnp.float32)
    mask_gt = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 5)) < 0.7)
    sort, walk = topk_mask(metric, mask_gt, 10), topk_mask_walk(metric, mask_gt, 10)
    np.testing.assert_array_equal(np.asarray(walk), np.asarray(sort))
    np.testing.assert_array_equal(np.asarray(walk).sum(-1), 10 * np.asarray(mask_gt))


def test_anchor_claimed_twice_goes_to_highest_overlap_over_all_rows():
    # anchor 0 is picked by rows 0 and 1, but row 2 (which did not pick it) has the highest overlap: row 2 wins
    mask_pos = jnp.array([[[1, 1, 0], [1, 0, 0], [0, 0, 0]]], bool)
    overlaps = jnp.array([[[0.2, 0.5, 0.0], [0.3, 0.0, 0.0], [0.9, 0.0, 0.0]]])
    gt_idx, fg, mask_pos = resolve_multiple_boxes(mask_pos, overlaps)
    np.testing.assert_array_equal(np.asarray(gt_idx)[0], [2, 0, 0])
    np.testing.assert_array_equal(np.asarray(fg)[0], [True, True, False])
    np.testing.assert_array_equal(np.asarray(mask_pos)[0, :, 0], [False, False, True])


def test_duplicated_box_goes_to_first_row():
    scores, pd, anchors, labels, gt, mask = random_case(0, n_real=(3, 0))
    gt[0, 1], labels[0, 1] = gt[0, 0], labels[0, 0]  # row 1 duplicates row 0: equal overlaps, argmax takes row 0
    _, _, _, fg, gt_idx = assign_jit(scores, pd, anchors, labels, gt, mask, num_classes=NC)
    assert np.asarray(fg)[0].any()
    assert not (np.asarray(gt_idx)[0][np.asarray(fg)[0]] == 1).any()


def test_perfect_predictions_give_topk_positives_with_unit_scores():
    # one box containing 9 anchors, every prediction equal to the box: equal metrics, so the 4 lowest-index
    # candidates win, and each gets score = box's best overlap (CIoU of identical boxes, ~1) on its class
    box = jnp.array([[[4.0, 4.0, 36.0, 36.0]]])
    pd = jnp.broadcast_to(box[:, :1], (1, 64, 4))
    scores = jnp.full((1, 64, NC), 0.5)
    labels, bboxes, tscores, fg, gt_idx = assign_jit(
        scores, pd, grid_anchors(), jnp.array([[[2]]]), box, jnp.array([[[True]]]), num_classes=NC, topk=4)
    assert set(np.flatnonzero(np.asarray(fg)[0])) == {9, 10, 11, 17}
    np.testing.assert_array_equal(np.asarray(labels)[0], 2)
    np.testing.assert_array_equal(np.asarray(bboxes)[0], np.broadcast_to(box[0], (64, 4)))
    expected = np.zeros((64, NC), np.float32)
    expected[[9, 10, 11, 17], 2] = 1.0
    np.testing.assert_allclose(np.asarray(tscores)[0], expected, atol=1e-6)
    assert not np.asarray(gt_idx).any()


def test_no_ground_truth_rows_gives_background():
    scores, pd, anchors, _, _, _ = random_case(1)
    labels, bboxes, tscores, fg, gt_idx = task_aligned_assign(
        scores, pd, anchors, jnp.zeros((2, 0, 1), jnp.int32), jnp.zeros((2, 0, 4)), jnp.zeros((2, 0, 1), bool),
        num_classes=NC)
    assert labels.shape == (2, 64) and (np.asarray(labels) == NC).all()
    assert bboxes.shape == (2, 64, 4) and tscores.shape == (2, 64, NC) and fg.shape == gt_idx.shape == (2, 64)
    assert not (np.asarray(bboxes).any() or np.asarray(tscores).any() or np.asarray(fg).any()
                or np.asarray(gt_idx).any())


def test_output_shapes_and_dtypes():
    outs = assign_jit(*random_case(2), num_classes=NC)
    assert [o.shape for o in outs] == [(2, 64), (2, 64, 4), (2, 64, NC), (2, 64), (2, 64)]
    assert [o.dtype for o in outs] == [jnp.int32, jnp.float32, jnp.float32, jnp.bool_, jnp.int32]


def test_padded_rows_content_is_ignored():
    scores, pd, anchors, labels, gt, mask = random_case(3, n_real=(3, 2))
    clean = assign_jit(scores, pd, anchors, labels, gt, mask, num_classes=NC)
    rng = np.random.default_rng(0)
    gt[~mask[..., 0]] = rng.uniform(0, 64, size=(int((~mask).sum()), 4))
    labels[~mask[..., 0]] = rng.integers(0, NC, size=(int((~mask).sum()), 1))
    noisy = assign_jit(scores, pd, anchors, labels, gt, mask, num_classes=NC)
    for name, c, n in zip(["labels", "bboxes", "scores", "fg_mask", "gt_idx"], clean, noisy):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(n), err_msg=name)


def test_jit_compiles_once_for_different_box_counts():
    traces = []

    @jax.jit
    def assign(*args):
        traces.append(1)
        return task_aligned_assign(*args, num_classes=NC)

    fg_counts = [int(assign(*random_case(s, n_real=n))[3].sum()) for s, n in enumerate([(1, 0), (5, 2), (0, 0)])]
    assert len(traces) == 1
    assert fg_counts[0] > 0 and fg_counts[2] == 0


def test_vmap_over_alpha_beta_matches_separate_calls():
    case = random_case(4, n_real=(5, 3))
    alphas, betas = jnp.array([0.5, 1.0, 2.0]), jnp.array([6.0, 2.0, 1.0])
    batched = jax.jit(jax.vmap(lambda al, be: task_aligned_assign(*case, num_classes=NC, alpha=al, beta=be)))(
        alphas, betas)
    assert np.asarray(batched[3]).any()
    for i in range(3):
        single = assign_jit(*case, num_classes=NC, alpha=alphas[i], beta=betas[i])
        np.testing.assert_array_equal(np.asarray(batched[3][i]), np.asarray(single[3]))
        np.testing.assert_allclose(np.asarray(batched[2][i]), np.asarray(single[2]), atol=1e-6)


def test_targets_carry_no_gradient():
    scores, pd, anchors, labels, gt, mask = random_case(5)
    total_score = lambda s: task_aligned_assign(s, pd, anchors, labels, gt, mask, num_classes=NC)[2].sum()
    assert float(total_score(scores)) > 0
    grad = jax.jit(jax.grad(total_score))(jnp.asarray(scores))
    assert not np.asarray(grad).any()


def test_class_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="num_classes"):
        task_aligned_assign(*random_case(6), num_classes=NC + 1)
