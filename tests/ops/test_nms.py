"""NMS: same kept boxes, in the same order, as torchvision on random inputs without exact score ties."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.nms import batched_nms, batched_nms_images, nms


def random_boxes(rng, n, size=640.0):
    """(n, 4) xyxy pixels, (n,) distinct scores."""
    centre = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(4, size / 4, (n, 2))
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + rng.uniform(0, 0.5 / n, n).astype(np.float32)
    return boxes, scores


def kept_rows(keep, valid):
    keep, valid = np.asarray(keep), np.asarray(valid)
    return keep[valid]


def test_hand_computed_example():
    boxes = jnp.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], jnp.float32)
    scores = jnp.array([0.9, 0.8, 0.7, 0.95])
    # IoU(3, 0) = 90/100 suppresses 0; IoU(3, 1) = 72/(90+100-72) = 0.61 suppresses 1; 2 is disjoint.
    keep, valid = nms(boxes, scores, 0.5, 4)
    assert kept_rows(keep, valid).tolist() == [3, 2]
    assert np.asarray(valid).tolist() == [True, True, False, False]


def test_threshold_is_strict_and_masked_candidates_are_ignored():
    boxes = jnp.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 4, 4]], jnp.float32)  # IoU(0, 1) = 0.5 exactly
    scores = jnp.array([0.9, 0.8, 0.99])
    keep, valid = nms(boxes, scores, 0.5, 3, candidate_mask=jnp.array([True, True, False]))
    assert kept_rows(keep, valid).tolist() == [0, 1]


@pytest.mark.parity
@pytest.mark.parametrize("n,seed", [(1000, 0), (5000, 1), (30000, 2)])
def test_nms_matches_torchvision(n, seed):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, n)
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    max_out = 1500
    keep, valid = jax.jit(nms, static_argnums=(2, 3))(jnp.asarray(boxes), jnp.asarray(scores), 0.5, max_out)
    np.testing.assert_array_equal(kept_rows(keep, valid), ref[:max_out])


@pytest.mark.parity
@pytest.mark.parametrize("n,seed,num_classes", [(2000, 3, 5), (20000, 4, 80)])
def test_batched_nms_matches_torchvision(n, seed, num_classes):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, n)
    class_ids = rng.integers(0, num_classes, n).astype(np.int32)
    ref = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                      torch.from_numpy(class_ids).long(), 0.6).numpy()
    max_out = 3000
    keep, valid = jax.jit(batched_nms, static_argnums=(3, 4))(
        jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(class_ids), 0.6, max_out)
    np.testing.assert_array_equal(kept_rows(keep, valid), ref[:max_out])


@pytest.mark.parity
def test_batched_over_images_with_masks_matches_per_image_torchvision():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(5)
    b, n = 3, 1200
    data = [random_boxes(rng, n) for _ in range(b)]
    boxes = np.stack([d[0] for d in data])
    scores = np.stack([d[1] for d in data])
    class_ids = rng.integers(0, 3, (b, n)).astype(np.int32)
    mask = scores > 0.4
    keep, valid = batched_nms_images(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(class_ids), 0.45, 300,
                                     candidate_mask=jnp.asarray(mask), tile_size=128)
    for i in range(b):
        rows = np.flatnonzero(mask[i])
        ref = torchvision.ops.batched_nms(torch.from_numpy(boxes[i][rows]), torch.from_numpy(scores[i][rows]),
                                          torch.from_numpy(class_ids[i][rows]).long(), 0.45).numpy()
        np.testing.assert_array_equal(kept_rows(keep[i], valid[i]), rows[ref][:300])


def test_no_candidates_gives_no_rows():
    boxes = jnp.zeros((10, 4))
    keep, valid = batched_nms(boxes, jnp.ones(10), jnp.zeros(10, jnp.int32), 0.5, 5,
                              candidate_mask=jnp.zeros(10, bool))
    assert not np.asarray(valid).any()


def test_empty_input_gives_no_rows():
    keep, valid = nms(jnp.zeros((0, 4)), jnp.zeros((0,)), 0.5, 3)
    assert keep.shape == (3,) and not np.asarray(valid).any()


@pytest.mark.parametrize("tile_size,n", [(3, 11), (4, 11), (64, 11), (64, 41)])
def test_suppression_chain_resolved_greedily_across_tile_sizes(tile_size, n):
    # boxes shifted by 4 px: IoU(i, i+1) = 6/14 = 0.43 > 0.4, IoU(i, i+2) = 2/18 = 0.11. Greedy keeps 0, which
    # suppresses 1; 1 being gone, 2 survives and suppresses 3; ... -> the even boxes. A chain of 41 in one tile
    # needs several loop steps of SWEEPS_PER_STEP sweeps before the tile converges.
    x = 4.0 * np.arange(n)
    boxes = jnp.asarray(np.stack([x, np.zeros(n), x + 10, np.full(n, 10.0)], axis=1))
    scores = jnp.linspace(1.0, 0.5, n)
    keep, valid = nms(boxes, scores, 0.4, n, tile_size=tile_size)
    assert kept_rows(keep, valid).tolist() == list(range(0, n, 2))


def test_nms_runs_inside_shard_map_with_the_same_result():
    """The train step runs per-device code under jax.shard_map (the two-stage loss calls NMS there)."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (1, 400, 2))
    boxes = jnp.asarray(np.concatenate([xy, xy + rng.uniform(5, 40, (1, 400, 2))], -1), jnp.float32)
    scores = jnp.asarray(rng.uniform(size=(1, 400)), jnp.float32)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    per_image = jax.vmap(lambda b, s: nms(b, s, 0.5, 40))
    sharded = jax.jit(jax.shard_map(per_image, mesh=mesh, in_specs=(P("data"), P("data")),
                                    out_specs=(P("data"), P("data"))))
    keep, valid = sharded(boxes, scores)
    ref_keep, ref_valid = per_image(boxes, scores)
    np.testing.assert_array_equal(np.asarray(valid), np.asarray(ref_valid))
    np.testing.assert_array_equal(np.asarray(keep)[np.asarray(valid)], np.asarray(ref_keep)[np.asarray(ref_valid)])
