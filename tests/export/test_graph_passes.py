"""`lean_graph`: the jax2onnx graph moved to NCHW with biases in the convs gives the same outputs, fewer nodes."""
import collections

import jax
import numpy as np
import pytest

from yolojax.bench.weights import batchnorm_off_identity
from yolojax.detectors import YOLOv8Task
from yolojax.export import export_model, onnx_export
from yolojax.export.graph_passes import lean_graph
from yolojax.models.weights import save_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

IMGSZ = 64
TASK = YOLOv8Task(scale="n", num_classes=3)


def non_trivial_variables(seed: int = 0) -> dict:
    """Initial YOLOv8n variables with BatchNorm statistics and biases moved off the identity (non-zero conv biases
    once BatchNorm is folded)."""
    return batchnorm_off_identity(TASK.init(jax.random.key(seed), (IMGSZ, IMGSZ)), np.random.default_rng(seed))


def outputs(model, batch: np.ndarray) -> list[np.ndarray]:
    """ONNX Runtime CPU without its own graph rewrites (which would hide a wrong pass behind its transpose
    optimizer)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": batch})


def test_lean_graph_keeps_outputs_and_drops_transposes(tmp_path, monkeypatch):
    weights = save_weights(tmp_path / "weights", non_trivial_variables(),
                           {"scale": "n", "num_classes": 3, "names": ["a", "b", "c"], "imgsz": IMGSZ})
    monkeypatch.setattr(onnx_export, "lean_graph", lambda model: None)
    raw = onnx.load(export_model(weights, imgsz=IMGSZ, batch="dynamic", out=tmp_path / "raw.onnx"))
    lean = onnx.ModelProto()
    lean.CopyFrom(raw)
    lean_graph(lean)
    onnx.checker.check_model(lean)
    before, after = (collections.Counter(n.op_type for n in m.graph.node) for m in (raw, lean))
    assert after["Transpose"] <= 4 < before["Transpose"]  # one at the input, one per head level
    assert after["Conv"] == before["Conv"] and after["Add"] < before["Add"] - before["Conv"] // 2
    batch = np.random.default_rng(1).integers(0, 256, (2, IMGSZ, IMGSZ, 3), dtype=np.uint8)
    for ours, reference in zip(outputs(lean, batch), outputs(raw, batch)):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_the_exported_forward_keeps_plain_convolutions_at_large_half_batches():
    from yolojax.export.graph import yolo_forward
    from yolojax.models.inference import apply_folded, fold_batchnorm
    from yolojax.models.layers import BLOCKS_MIN_INFERENCE_BATCH

    task = YOLOv8Task("n", num_classes=3, dtype=jax.numpy.float16)  # the half export's
    shapes = jax.eval_shape(lambda key: task.init(key, (64, 64)), jax.random.key(0))
    variables = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)  # the program's form needs no values
    images = jax.ShapeDtypeStruct((BLOCKS_MIN_INFERENCE_BATCH, 64, 64, 3), np.uint8)
    folded = fold_batchnorm(variables)

    def transposes(forward):
        return str(jax.make_jaxpr(forward)(images)).count("transpose[")

    on_blocks = transposes(lambda im: apply_folded(task.model, folded, im.astype(task.dtype) / 255.0, train=False))
    assert transposes(yolo_forward(task, variables)) < on_blocks  # predict at this batch runs over pixel blocks
