"""yolojax.losses: BCE, DFL and CIoU terms by hand, and detection_loss's contract (shapes, jit, grad, vmap, errors).

Parity of detection_loss with the reference's v8DetectionLoss is in tests/test_parity_core.py.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.losses import (
    bbox_loss,
    bce_with_logits,
    detection_loss,
    dfl_cross_entropy,
    dfl_expectation,
    dfl_loss,
    dfl_statistics,
)
from yolojax.losses.detection import classification_loss, split_channels

NC, REG_MAX = 4, 16
LEVELS = [(8, 8), (4, 4), (2, 2)]  # a 64x64 image at strides 8, 16, 32
# jitted once per shape: eager op-by-op dispatch is slower than compiling on the CI machine
loss_jit = jax.jit(detection_loss, static_argnames=("num_classes", "strides", "reg_max", "topk"))


def random_feats(seed, b=2, levels=LEVELS, dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(levels))
    return [jax.random.normal(k, (b, h, w, 4 * REG_MAX + NC), dtype) for k, (h, w) in zip(keys, levels)]


def targets(n_real=(2, 0), m=4, seed=0):
    rng = np.random.default_rng(seed)
    b = len(n_real)
    xy = rng.uniform(0.3, 0.7, size=(b, m, 2))
    wh = rng.uniform(0.2, 0.5, size=(b, m, 2))
    mask = np.arange(m)[None] < np.asarray(n_real)[:, None]
    return {"cls": jnp.asarray(rng.integers(0, NC, size=(b, m)), jnp.int32),
            "bboxes": jnp.asarray(np.concatenate([xy, wh], -1) * mask[..., None], jnp.float32),
            "mask": jnp.asarray(mask)}


def test_bce_by_hand():
    out = bce_with_logits(jnp.array([0.0, 0.0, 2.0]), jnp.array([1.0, 0.25, 0.0]))
    np.testing.assert_allclose(np.asarray(out), [math.log(2), math.log(2), math.log1p(math.exp(2))], rtol=1e-6)


def test_bce_is_stable_for_large_logits():
    out = bce_with_logits(jnp.array([100.0, -100.0]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(out), [100.0, 100.0], rtol=1e-6)


def test_bce_gradient_is_sigmoid_minus_target():
    x, z = jnp.array([-1.5, 0.0, 3.0]), jnp.array([0.2, 1.0, 0.0])
    grad = jax.grad(lambda v: bce_with_logits(v, z).sum())(x)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(jax.nn.sigmoid(x) - z), rtol=1e-6)


def test_dfl_expectation_of_peaked_distribution_is_its_bin():
    logits = jnp.full((4, REG_MAX), -1e4).at[jnp.arange(4), jnp.array([0, 3, 7, 15])].set(0.0)
    np.testing.assert_allclose(np.asarray(dfl_expectation(logits.reshape(-1), REG_MAX)), [0, 3, 7, 15], atol=1e-6)


def test_dfl_loss_by_hand():
    logits = np.random.default_rng(0).normal(size=(4, REG_MAX)).astype(np.float32)
    target = np.array([2.3, 0.0, 14.0, 20.0], np.float32)  # 20 is clipped to reg_max - 1 - 0.01 = 14.99
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    t = np.minimum(target, 14.99)
    lo = np.floor(t).astype(int)
    per_side = -logp[range(4), lo] * (lo + 1 - t) - logp[range(4), lo + 1] * (t - lo)
    out = dfl_loss(jnp.asarray(logits.reshape(-1)), jnp.asarray(target), REG_MAX)
    np.testing.assert_allclose(float(out), per_side.mean(), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dfl_statistics_values_and_written_out_gradient_match_autodiff(seed):
    # the written-out gradient of (expectation, log-sum-exp) against autodiff of the plain softmax formulas, with
    # both outputs feeding the loss as in detection_loss (decoded boxes and the DFL term)
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(0, 3, size=(2, 7, 4 * REG_MAX)), jnp.float32)
    target = jnp.asarray(rng.uniform(0, REG_MAX, size=(2, 7, 4)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(2, 7, 4)), jnp.float32)

    def plain(x):
        grouped = x.reshape(2, 7, 4, REG_MAX)
        expectation = (jax.nn.softmax(grouped) * jnp.arange(REG_MAX, dtype=jnp.float32)).sum(-1)
        return expectation, jax.nn.logsumexp(grouped, axis=-1)

    def loss(statistics, x):
        expectation, log_sum_exp = statistics(x)
        return (expectation * weights).sum() + dfl_cross_entropy(x, log_sum_exp, target).sum()

    for ours, theirs in zip(dfl_statistics(logits, REG_MAX), plain(logits)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda x: loss(lambda v: dfl_statistics(v, REG_MAX), x))(logits)
    expected = jax.grad(lambda x: loss(plain, x))(logits)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_dfl_statistics_keep_the_logits_dtype_in_the_gradient():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4 * REG_MAX)), jnp.bfloat16)
    expectation, log_sum_exp = dfl_statistics(logits, REG_MAX)
    assert expectation.dtype == log_sum_exp.dtype == jnp.float32
    grad = jax.grad(lambda x: dfl_statistics(x, REG_MAX)[0].sum())(logits)
    expected = jax.grad(lambda x: dfl_statistics(x.astype(jnp.float32), REG_MAX)[0].sum())(logits)
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(expected, np.float32))


def test_bbox_loss_weights_foreground_by_score_sum():
    # one foreground anchor whose prediction equals its target: CIoU ~ 1, so the box term ~ 0; background anchors
    # with wild predictions must not count
    anchors = jnp.array([[2.0, 2.0], [5.0, 5.0]])
    target = jnp.array([[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]]])
    pred = jnp.array([[[1.0, 1.0, 3.0, 3.0], [-50.0, 0.0, 90.0, 1.0]]])
    weight = jnp.array([[0.6, 0.9]])
    dist = jnp.zeros((1, 2, 4 * REG_MAX))
    _, log_sum_exp = dfl_statistics(dist, REG_MAX)
    loss_iou, loss_dfl = bbox_loss(dist, log_sum_exp, pred, anchors, target, weight, 1.0, jnp.array([[True, False]]))
    assert abs(float(loss_iou)) < 1e-6
    # uniform logits: CE = log(16) for every bin, so DFL = log(16) * weight 0.6
    np.testing.assert_allclose(float(loss_dfl), math.log(REG_MAX) * 0.6, rtol=1e-6)


def test_classification_loss_equals_bce_against_one_hot_targets():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 30, NC)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, NC, size=(2, 30)), jnp.int32)
    score = jnp.asarray(rng.uniform(size=(2, 30)) * (rng.uniform(size=(2, 30)) < 0.3), jnp.float32)
    expected = bce_with_logits(logits, jax.nn.one_hot(labels, NC) * score[..., None]).sum()
    np.testing.assert_allclose(float(classification_loss(logits, labels, score)), float(expected), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_classification_loss_gradient_is_sigmoid_minus_target(dtype):
    # the written-out gradient against autodiff of the BCE with the one-hot targets built out; an out-of-range
    # label with score 0 (what the assigner gives background anchors of an empty image) adds nothing
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(0, 2, size=(2, 30, NC)), dtype)
    labels = jnp.asarray(rng.integers(0, NC, size=(2, 30)), jnp.int32).at[0, 0].set(NC)
    score = jnp.asarray(rng.uniform(size=(2, 30)) * (rng.uniform(size=(2, 30)) < 0.5), jnp.float32).at[0, 0].set(0)

    def built_out(x):
        z = jax.nn.one_hot(labels, NC) * score[..., None]
        return bce_with_logits(x.astype(jnp.float32), z).sum()

    np.testing.assert_allclose(float(classification_loss(logits, labels, score)), float(built_out(logits)),
                               rtol=1e-6)
    grad = jax.grad(lambda x: 0.5 * classification_loss(x, labels, score))(logits)
    expected = jax.grad(lambda x: 0.5 * built_out(x))(logits)
    assert grad.dtype == dtype
    # bfloat16: both round the same float32 gradient, computed in two ways, to 8 bits of mantissa
    np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(expected, np.float32),
                               rtol=1e-5 if dtype == jnp.float32 else 8e-3, atol=1e-7)


def test_loss_is_items_sum_times_batch():
    loss, items = loss_jit(random_feats(0), targets(), num_classes=NC)
    assert loss.shape == () and items.shape == (3,)
    np.testing.assert_allclose(float(loss), float(items.sum()) * 2, rtol=1e-6)
    assert (np.asarray(items) > 0).all()


def test_no_ground_truth_gives_only_classification_loss():
    # no positives: target_scores_sum = max(0, 1) = 1, every class target 0, box and DFL terms exactly 0
    feats = random_feats(1)
    loss, items = loss_jit(feats, targets(n_real=(0, 0)), num_classes=NC)
    logits = jnp.concatenate([f.reshape(2, -1, 4 * REG_MAX + NC)[..., 4 * REG_MAX:] for f in feats], 1)
    expected_cls = float(bce_with_logits(logits, 0.0).sum()) * 0.5
    assert float(items[0]) == 0.0 and float(items[2]) == 0.0
    np.testing.assert_allclose(float(items[1]), expected_cls, rtol=1e-6)


@pytest.mark.parametrize("n_real,m", [((0, 0), 4), ((0, 0), 0), ((3, 1), 4)])
def test_gradient_is_finite(n_real, m):
    tg = targets(n_real=n_real, m=max(m, 1))
    if m == 0:
        tg = {k: v[:, :0] for k, v in tg.items()}
    grads = jax.jit(jax.grad(lambda f: detection_loss(f, tg, num_classes=NC)[0]))(random_feats(2))
    for g in grads:
        assert np.isfinite(np.asarray(g)).all() and np.asarray(g).any()


def test_jit_compiles_once_for_different_box_counts():
    traces = []

    @jax.jit
    def loss_fn(feats, tg):
        traces.append(1)
        return detection_loss(feats, tg, num_classes=NC)

    box_terms = [float(loss_fn(random_feats(3), targets(n_real=n))[1][0]) for n in [(1, 0), (4, 2), (0, 0)]]
    assert len(traces) == 1
    assert box_terms[0] > 0 and box_terms[2] == 0


def test_vmap_over_hyper_parameters_matches_separate_calls():
    feats, tg = random_feats(4), targets(n_real=(3, 2))
    hyper = {"alpha": jnp.array([0.5, 1.0]), "beta": jnp.array([6.0, 3.0]), "box": jnp.array([7.5, 1.0]),
             "cls": jnp.array([0.5, 2.0]), "dfl": jnp.array([1.5, 0.0])}
    batched = jax.jit(jax.vmap(lambda h: detection_loss(feats, tg, num_classes=NC, **h)))(hyper)
    for i in range(2):
        loss, items = loss_jit(feats, tg, num_classes=NC, **{k: v[i] for k, v in hyper.items()})
        np.testing.assert_allclose(np.asarray(batched[1][i]), np.asarray(items), rtol=1e-5)
        np.testing.assert_allclose(float(batched[0][i]), float(loss), rtol=1e-5)


def test_bfloat16_head_outputs_are_accepted():
    f32 = random_feats(5)
    loss32, _ = loss_jit(f32, targets(), num_classes=NC)
    loss16, _ = loss_jit([f.astype(jnp.bfloat16) for f in f32], targets(), num_classes=NC)
    assert loss16.dtype == jnp.float32
    np.testing.assert_allclose(float(loss16), float(loss32), rtol=2e-2)


def test_wrong_channel_count_is_an_error():
    with pytest.raises(ValueError, match=r"feats\[0\]"):
        detection_loss(random_feats(6), targets(), num_classes=NC + 1)


def test_missing_target_key_is_an_error():
    tg = targets()
    del tg["mask"]
    with pytest.raises(ValueError, match="mask"):
        detection_loss(random_feats(7), tg, num_classes=NC)


def test_split_channels_gradient_joins_the_parts():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 7)), jnp.float32)
    w1, w2 = jnp.arange(2 * 3 * 4.0).reshape(2, 3, 4), -jnp.arange(2 * 3 * 3.0).reshape(2, 3, 3)
    first, rest = split_channels(x, 4)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(x[..., :4]))
    np.testing.assert_array_equal(np.asarray(rest), np.asarray(x[..., 4:]))
    grad = jax.grad(lambda v: (split_channels(v, 4)[0] * w1).sum() + (split_channels(v, 4)[1] * w2).sum())(x)
    np.testing.assert_array_equal(np.asarray(grad), np.concatenate([w1, w2], -1))
    only_first = jax.grad(lambda v: split_channels(v, 4)[0].sum())(x)  # the unused part's gradient is zero
    np.testing.assert_array_equal(np.asarray(only_first), np.concatenate([np.ones((2, 3, 4)), np.zeros((2, 3, 3))], -1))


def test_bfloat16_head_gradient_is_the_float32_gradient_rounded_once():
    # the DFL term reaches the box logits through the statistics and the target-bin picks; their gradients are
    # added in float32 before the one rounding to bfloat16 (two roundings and a bfloat16 sum land further off)
    feats = [f.astype(jnp.bfloat16) for f in random_feats(3)]
    loss = lambda fs: detection_loss(fs, targets(n_real=(3, 2)), num_classes=NC)[0]  # noqa: E731
    low = jax.grad(loss)(feats)
    high = jax.grad(loss)([f.astype(jnp.float32) for f in feats])
    for g16, g32 in zip(low, high):
        g16, g32 = np.asarray(g16, np.float32), np.asarray(g32)
        large = np.abs(g32) > 1e-3
        np.testing.assert_allclose(g16[large], g32[large], rtol=2.0**-8)
