"""Start a run from weights that need not fit the model (fine-tuning): every tensor whose path and shape match is
taken over, the others keep their fresh initialisation — the class head when the class count differs, most tensors
of another scale. The count is reported as the reference does ("Transferred 349/355 items from pretrained
weights"); it counts the leaves of `params` and `batch_stats`."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np
from flax import traverse_util

from yolojax.detectors import DetectionTask
from yolojax.xla_flags import jax_setting


@dataclasses.dataclass(frozen=True)
class Transfer:
    """What `transfer_variables` did: leaves taken from the source, leaves in the model, the paths it kept fresh."""

    transferred: int
    total: int
    reinitialised: tuple[str, ...]

    def message(self) -> str:
        line = f"Transferred {self.transferred}/{self.total} items from pretrained weights"
        return line + (" (none fits: weights of another model family?)" if not self.transferred else "")


def flat_leaves(variables: dict) -> dict[str, Any]:
    """{"params": {"model_0": {"conv": {"kernel": x}}}} -> {"params/model_0/conv/kernel": x}."""
    return traverse_util.flatten_dict(variables, sep="/")


def unfitting_paths(source: dict, template: dict) -> tuple[str, ...]:
    """Paths of `template`'s leaves that `source` lacks or holds with another shape (template: arrays or
    `jax.ShapeDtypeStruct`s)."""
    have = flat_leaves(source)
    return tuple(path for path, leaf in flat_leaves(template).items()
                 if path not in have or np.shape(have[path]) != tuple(leaf.shape))


def transfer_variables(source: dict, fresh: dict) -> tuple[dict, Transfer]:
    """`fresh` with each leaf replaced by `source`'s leaf of the same path and shape, cast to `fresh`'s dtype.

    Args:
      source: pretrained variables {"params": ..., "batch_stats": ...} (numpy or jax arrays); leaves the model does
        not have are ignored.
      fresh: the model's initial variables; `jax.ShapeDtypeStruct` leaves suffice where the source fits.
    Returns:
      (variables with `fresh`'s structure: the source's leaves as numpy arrays, the others `fresh`'s, Transfer).
    """
    have, keep = flat_leaves(source), set(unfitting_paths(source, fresh))
    leaves = flat_leaves(fresh)
    if any(isinstance(leaves[path], jax.ShapeDtypeStruct) for path in keep):
        raise ValueError(f"transfer_variables: {sorted(keep)[0]} does not fit and `fresh` holds no value for it")
    merged = {path: leaf if path in keep else np.asarray(have[path], dtype=leaf.dtype)
              for path, leaf in leaves.items()}
    report = Transfer(len(leaves) - len(keep), len(leaves), tuple(sorted(keep)))
    return traverse_util.unflatten_dict(merged, sep="/"), report


@functools.lru_cache(maxsize=8)
def _cached_init(task: Any) -> Callable:  # a hashable DetectionTask
    return jax.jit(task.init, static_argnums=1)


def jitted_init(task: DetectionTask) -> Callable:
    """`task.init` jitted (image_hw static); one compiled function per task when the task is hashable (a frozen
    dataclass), so a second run of the same model in a process does not compile it again."""
    try:
        hash(task)
    except TypeError:
        return jax.jit(task.init, static_argnums=1)
    return _cached_init(task)


def threefry_as_kernels() -> contextlib.AbstractContextManager:
    """Inside: jax lowers each threefry hash to one GPU kernel instead of inline operations; the bits are the same.

    A model's initialisation derives one key per parameter (flax folds the module path in: a few hundred threefry
    hashes), and XLA takes 10-20 s on a GPU to compile those as inline operations, under a second as kernels. It is
    set for the initialisation alone, where it was measured; the train step hashes a couple of keys and keeps the
    inline form. CPUs ignore the setting.
    """
    return jax_setting("jax_threefry_gpu_kernel_lowering", True)


def initial_variables(task: DetectionTask, key: jax.Array, image_hw: tuple[int, int], pretrained: dict | None = None,
                      *, log: Callable[[str], None] | None = print) -> dict:
    """The model's variables at step 0: `task.init(key)`, with every fitting tensor of `pretrained` taken over.

    The fresh initialisation runs only when some tensor does not fit. `log` receives the Transfer message (on
    process 0 of a multi-process run)."""
    init = jitted_init(task)
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    with threefry_as_kernels():
        if pretrained is None:
            return init(key, image_hw)
        template = jax.eval_shape(init, key, image_hw)
        fresh = init(key, image_hw) if unfitting_paths(pretrained, template) else template
    variables, report = transfer_variables(pretrained, fresh)
    if log is not None and jax.process_index() == 0:
        log(report.message())
    return variables
