"""Variables prepared for inference (BatchNorm folded, kernels cast and in OHWI): the same outputs and detections as
the plain eval forward, from fewer program arguments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.bench.weights import batchnorm_off_identity
from yolojax.detectors import YOLOv8Task, inference_variables
from yolojax.models.inference import FoldedVariables, PackedArrays, apply_folded, fold_batchnorm, pack_arrays
from yolojax.models.layers import BLOCKS_MIN_INFERENCE_BATCH


@pytest.fixture(scope="module")
def task_and_variables():
    task = YOLOv8Task("n", num_classes=3)
    return task, batchnorm_off_identity(task.init(jax.random.key(0), (64, 64)), np.random.default_rng(0))


def images(seed=0, b=2, hw=64):
    return np.random.default_rng(seed).integers(0, 256, (b, hw, hw, 3), dtype=np.uint8)


@pytest.mark.parametrize("ohwi", [False, True])
def test_folded_forward_equals_the_plain_eval_forward(task_and_variables, ohwi):
    task, variables = task_and_variables
    x = jnp.asarray(images(), jnp.float32) / 255.0
    plain = task.model.apply(variables, x, train=False)
    folded = fold_batchnorm(variables, ohwi=ohwi)
    assert len(folded.folded) == 57  # every Conv -> BatchNorm pair of v8n
    assert bool(folded.ohwi) == ohwi
    out = jax.jit(lambda v, x: apply_folded(task.model, v, x, train=False))(folded, x)
    for a, b in zip(plain, out):  # float32: the fold changes the rounding only
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-4 * float(jnp.abs(a).max()))


def test_folded_predict_finds_the_same_boxes(task_and_variables):
    task, variables = task_and_variables
    predict = jax.jit(lambda v, im: task.predict(v, im, conf=0.0, max_det=50))
    prepared = inference_variables(task, variables)
    assert isinstance(prepared, FoldedVariables)
    plain, folded = predict(variables, images(1)), predict(prepared, images(1))
    np.testing.assert_array_equal(np.asarray(folded["valid"]), np.asarray(plain["valid"]))
    np.testing.assert_array_equal(np.asarray(folded["classes"]), np.asarray(plain["classes"]))
    np.testing.assert_allclose(np.asarray(folded["boxes"]), np.asarray(plain["boxes"]), atol=1e-2)
    np.testing.assert_allclose(np.asarray(folded["scores"]), np.asarray(plain["scores"]), rtol=1e-3, atol=1e-6)


def test_half_precision_folded_forward_tracks_the_plain_one(task_and_variables):
    _, variables = task_and_variables
    task = YOLOv8Task("n", num_classes=3, dtype=jnp.bfloat16)
    x = jnp.asarray(images(2), jnp.bfloat16) / 255.0
    plain = task.model.apply(variables, x, train=False)
    prepared = task.inference_variables(variables)
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(prepared.tree())
               if path[-1].key == "kernel" and path[-2].key == "conv"]
    assert {leaf.dtype for leaf in kernels} == {jnp.dtype(jnp.bfloat16)}  # cast once, not per call
    out = apply_folded(task.model, prepared, x, train=False)
    boxes, probs = (np.asarray(a, np.float32) for a in out)
    ref_boxes, ref_probs = (np.asarray(a, np.float32) for a in plain)
    # bf16 rounds the folded kernel once more than the plain forward; boxes are in pixels of the 64-px input
    assert np.abs(boxes - ref_boxes).max() < 1.0
    assert np.abs(probs - ref_probs).max() < 0.02


def test_the_prepared_program_takes_one_weight_argument_per_dtype(task_and_variables):
    task, variables = task_and_variables
    folded = fold_batchnorm(variables, ohwi=True)
    # per pair: kernel, scale, bias, mean, var -> kernel, bias
    assert len(jax.tree.leaves(folded)) < 0.45 * len(jax.tree.leaves(variables))
    half = YOLOv8Task("n", num_classes=3, dtype=jnp.bfloat16)
    prepared = half.inference_variables(variables)
    assert sorted(leaf.dtype.name for leaf in jax.tree.leaves(prepared)) == ["bfloat16", "float32"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_packed_variables_unpack_to_the_same_arrays_and_forward(task_and_variables, dtype):
    task, variables = task_and_variables
    folded = fold_batchnorm(variables, kernel_dtype=dtype, ohwi=True)
    packed = fold_batchnorm(variables, kernel_dtype=dtype, ohwi=True, pack=True)
    assert isinstance(packed.variables, PackedArrays)
    unpacked = jax.jit(lambda p: p.tree())(packed)
    assert jax.tree.structure(unpacked) == jax.tree.structure(folded.tree())
    for got, want in zip(jax.tree.leaves(unpacked), jax.tree.leaves(folded.tree())):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    model = YOLOv8Task("n", num_classes=3, dtype=dtype).model
    forward = jax.jit(lambda v, x: apply_folded(model, v, x, train=False))
    x = jnp.asarray(images(3), dtype) / 255.0
    for got, want in zip(forward(packed, x), forward(folded, x)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_pack_arrays_keeps_order_shapes_and_dtypes():
    tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": [jnp.ones((4,), jnp.int32), jnp.zeros((), jnp.float32)]}
    packed = pack_arrays(tree)
    assert {k: v.shape for k, v in packed.buffers.items()} == {"float32": (7,), "int32": (4,)}
    back = packed.unpack()
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_tasks_without_inference_variables_get_their_variables_back():
    class Plain:
        pass

    variables = {"params": {"w": jnp.ones(2)}}
    assert inference_variables(Plain(), variables) is variables


def test_large_batch_inference_over_pixel_blocks_tracks_the_pixel_forward(task_and_variables):
    _, variables = task_and_variables
    task = YOLOv8Task("n", num_classes=3, dtype=jnp.bfloat16)
    prepared = task.inference_variables(variables)  # as predict and val take them
    images = jnp.asarray(np.random.default_rng(1).random((BLOCKS_MIN_INFERENCE_BATCH, 32, 32, 3)), jnp.bfloat16)
    programs = {on: jax.jit(lambda v, x, m=task.model.clone(inference_blocks=on): apply_folded(m, v, x, train=False))
                for on in (True, False)}
    texts = {on: program.lower(prepared, images).as_text() for on, program in programs.items()}
    assert texts[True].count("transpose") > texts[False].count("transpose")  # the layout changes are there
    (boxes_b, probs_b), (boxes_p, probs_p) = (programs[on](prepared, images) for on in (True, False))
    # bf16: the other summation order moves the outputs by rounding only; boxes in pixels of the 32-px input
    assert float(jnp.abs(boxes_b - boxes_p).max()) < 1.0
    assert float(jnp.abs(probs_b - probs_p).max()) < 0.02
