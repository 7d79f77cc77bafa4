"""Reference weights used in place of yolojax weights (`train weights=x.pt`, `YOLO("x.pt")`): imported once with
`convert_file` into a folder of a cache, named by the file's content, and reused from there."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from yolojax.convert.files import convert_file
from yolojax.convert.sources import WeightsFileNotFoundError

REFERENCE_SUFFIXES = (".pt", ".pth", ".safetensors")


def is_reference_file(path) -> bool:
    """Whether `path` means reference weights (a file, or a name with their suffix) rather than a yolojax weights
    folder."""
    return Path(path).is_file() or Path(path).suffix in REFERENCE_SUFFIXES


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_cached(src, cache_dir, *, trust_pickle: bool = False) -> Path:
    """The yolojax weights folder of reference weights `src`: `cache_dir/<stem>-<sha256 prefix>/`, written by
    `convert_file` (scale, class count and names from the file) unless already there.

    Raises what `convert_file` raises: a WeightsFileError (yolojax.convert.sources) naming the file: missing, not
    weights, an ultralytics checkpoint without trust_pickle (UntrustedPickleError), not YOLOv8 detection weights.
    """
    src = Path(src)
    if not src.is_file():
        raise WeightsFileNotFoundError(f"reference weights {src} do not exist")
    folder = Path(cache_dir) / f"{src.stem}-{file_digest(src)[:16]}"
    if (folder / "meta.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # convert beside the final folder and rename, so concurrent callers never read a half-written one
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        convert_file(src, staging / "weights", trust_pickle=trust_pickle)
        try:
            (staging / "weights").rename(folder)
        except OSError:  # another process won the race
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def weights_folder(weights, cache_dir, *, trust_pickle: bool = False) -> Path:
    """The yolojax weights folder `weights` names: reference weights are imported into `cache_dir` first
    (`import_cached`, same errors); anything else is taken as a yolojax weights folder (not checked here)."""
    if is_reference_file(weights):
        return import_cached(weights, cache_dir, trust_pickle=trust_pickle)
    return Path(weights)
