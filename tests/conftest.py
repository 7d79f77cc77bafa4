import os

# Keep the reference quiet and offline, and keep JAX on fp32 CPU for the tests.
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

if not hasattr(np, "trapz"):  # ultralytics 8.2.103 calls np.trapz, renamed np.trapezoid in numpy 2
    np.trapz = np.trapezoid
