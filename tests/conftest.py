import os

# Keep the reference quiet and offline, and keep JAX on fp32 CPU for the tests.
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

if not hasattr(np, "trapz"):  # ultralytics 8.2.103 calls np.trapz, renamed np.trapezoid in numpy 2
    np.trapz = np.trapezoid


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """`shapes_dataset(num_train, num_val, imgsz)` -> data yaml of a generated shapes dataset, made once per size."""
    from yolojax.data.shapes import ensure_shapes_dataset

    made = {}

    def make(num_train, num_val, imgsz):
        key = (num_train, num_val, imgsz)
        if key not in made:
            made[key] = ensure_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=num_train,
                                              num_val=num_val, imgsz=imgsz)
        return made[key]

    return make
