"""FlatLayout: pytrees laid end to end in one buffer and back (the training state's and the exchange's layout)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.ops.flat import FlatLayout


def _tree():
    return {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
            "b": {"c": jnp.int32(7), "d": jnp.ones(4, jnp.bfloat16)}}


def test_round_trip_keeps_shapes_dtypes_and_values_in_any_order():
    tree = _tree()
    for order in (None, (2, 0, 1)):
        layout = FlatLayout.of(tree, order)
        flat = layout.flatten(tree)
        assert flat.shape == (11,) and flat.dtype == jnp.float32
        back = layout.unflatten(flat)
        assert jax.tree.structure(back) == jax.tree.structure(tree)
        for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    # buffer order (2, 0, 1): the bf16 ones first, then a's six values, then the int
    flat = np.asarray(FlatLayout.of(tree, (2, 0, 1)).flatten(tree))
    np.testing.assert_array_equal(flat, [1, 1, 1, 1, 0, 1, 2, 3, 4, 5, 7])


def test_numpy_buffers_unflatten_on_the_host_and_float_dtype_overrides_floating_leaves_only():
    tree = _tree()
    layout = FlatLayout.of(tree)
    host = layout.unflatten(np.asarray(layout.flatten(tree), np.float64), float_dtype=np.float64)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(host))
    assert host["a"].dtype == np.float64 and host["b"]["d"].dtype == np.float64 and host["b"]["c"].dtype == np.int32


def test_group_ends_and_their_checks():
    tree = [jnp.zeros(2), jnp.zeros(3), jnp.zeros(5)]
    groups = [1, 0, 1]
    layout = FlatLayout.of(tree, order=(1, 0, 2))
    assert layout.ends(groups.__getitem__, 3) == (3, 10, 10)  # group 2 is empty: it ends where group 1 does
    with pytest.raises(ValueError, match="keep each group together"):
        FlatLayout.of(tree).ends(groups.__getitem__, 3)
    with pytest.raises(ValueError, match="permutation"):
        FlatLayout.of(tree, order=(0, 0, 1))


def test_an_empty_tree_is_an_empty_buffer_and_layouts_are_hashable_static_values():
    layout = FlatLayout.of({})
    assert layout.flatten({}).shape == (0,) and layout.unflatten(jnp.zeros(0)) == {}
    one, other = FlatLayout.of(_tree()), FlatLayout.of(_tree())
    assert one == other and hash(one) == hash(other)
