"""An exported function -> serialized StableHLO (`jax.export`) plus its metadata JSON, and back."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import jax
from jax import export as jax_export

PLATFORMS = ("cpu", "cuda")  # one artefact runs on either


def meta_path(path: Path) -> Path:
    """The metadata JSON beside a StableHLO file: model.stablehlo -> model.json."""
    return Path(path).with_suffix(".json")


def export_stablehlo(fn: Callable, input_specs: Sequence[jax.ShapeDtypeStruct], meta: dict, out: Path) -> Path:
    """Export `fn` (shapes as `input_specs`, possibly symbolic) for PLATFORMS, write the serialized bytes to
    `out` and `meta` (plus the platforms) to `meta_path(out)`. Returns `out`."""
    exported = jax_export.export(jax.jit(fn), platforms=PLATFORMS)(*input_specs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(exported.serialize())
    meta_path(out).write_text(json.dumps({**meta, "platforms": list(PLATFORMS)}, indent=1))
    return out


def load_stablehlo(path) -> tuple[jax_export.Exported, dict]:
    """A StableHLO artefact -> (`jax.export.Exported`, whose `.call(*inputs)` runs it, and its metadata)."""
    path = Path(path)
    exported = jax_export.deserialize(bytearray(path.read_bytes()))
    return exported, json.loads(meta_path(path).read_text())


def batch_dimension(batch) -> int | object:
    """`batch` (an int, or "dynamic") -> the leading dimension of the input specs (a symbolic `b` when dynamic)."""
    return jax_export.symbolic_shape("b")[0] if batch == "dynamic" else int(batch)
