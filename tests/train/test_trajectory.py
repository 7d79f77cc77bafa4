"""Same-start trajectory against the reference (benchmarks/scripts/check_trajectory.py) at a tiny size: the same
weights and batches give the same loss at every step and the same parameters after it."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "scripts"))

LOSS_RTOL = 2e-5       # per step, ours / reference - 1 (seen 4e-6)
DISTANCE_TOL = 1e-2    # per layer ||ours - ref|| / ||ref - start|| (seen 3e-3 after the first tiny AdamW step)


@pytest.mark.parity
def test_adamw_trajectory_matches_reference_step_by_step(shapes_dataset):
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from check_trajectory import run_trajectory

    data = shapes_dataset(8, 2, 64)
    record = run_trajectory("AdamW", iterations=4, imgsz=64, batch=2, data=str(data), every=1, fast_compile=True,
                            log=lambda _: None)
    ours, reference = np.asarray(record["loss"]["ours"]), np.asarray(record["loss"]["reference"])
    assert len(ours) == 4 and np.all(reference > 0)
    np.testing.assert_allclose(ours, reference, rtol=LOSS_RTOL)
    distances = record["distance"]["ours"]
    assert len(distances) == 4 and len(distances[-1]) == 17  # the layers with parameters, every iteration
    for i, per_layer in enumerate(distances[1:], start=2):  # iteration 1 trains nothing: AdamW's warmup lr is 0
        worst = max(per_layer, key=per_layer.get)
        assert per_layer[worst] <= DISTANCE_TOL, f"iteration {i}: {worst} {per_layer[worst]}"
