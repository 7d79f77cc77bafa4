"""YOLO label files: parsing with bad-input checks, image verification, and a scan with a cache file.

A label file holds one row per object, `cls cx cy w h` normalized to [0, 1] (or `cls x1 y1 x2 y2 ...`, a polygon,
which becomes its bounding box, as the reference reads segment datasets). What happens to bad input, following the
reference (ultralytics/data/utils.py verify_image_label) unless said otherwise:

- unreadable image, image under 10 px, unknown format              -> image skipped (counted corrupt), warning
- truncated JPEG (no end-of-image marker)                          -> kept and decoded as is, warning (the reference
                                                                      rewrites the file; we never touch user files)
- a row with the wrong column count, or not numbers                -> image skipped (corrupt), warning
- class id not an integer in [0, num_classes)                     -> image skipped (corrupt), warning
- coordinates slightly outside [0, 1] (by <= COORD_TOLERANCE)      -> clipped, warning (the reference skips)
- coordinates far outside [0, 1] (e.g. pixels)                     -> image skipped (corrupt), warning
- zero-area box (after clipping)                                   -> row dropped, warning
- duplicate rows                                                   -> duplicates dropped, warning
- missing / empty label file                                       -> kept as a background image (counted)

Every warning names the file and the reason. Records are plain dicts (see `LabelRecord`).

The scan result is kept in a cache file beside the labels folder: an uncompressed .npz read with
`allow_pickle=False` (a dataset is downloaded data, so reading it must never run code), holding a JSON header (format,
version, hash of the files it covers, counts, messages, per-image fields) and the labels of all images concatenated.
Any other file at that path (an older pickle cache, a foreign or damaged file, another version, a stale hash) is
ignored with a warning and the labels are scanned again.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

import numpy as np

IMG_FORMATS = frozenset({"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"})
COORD_TOLERANCE = 0.05
CACHE_FORMAT = "yolojax-label-cache"
CACHE_VERSION = 2


class LabelRecord(TypedDict):
    """One usable image: `im_file` path, `ori_shape` (h0, w0) pixels, `cls` (n,) int32, `bboxes` (n, 4) float32
    normalized xywh, `image_id` (int or str, for metrics)."""

    im_file: str
    ori_shape: tuple
    cls: np.ndarray
    bboxes: np.ndarray
    image_id: object


class DataWarning(UserWarning):
    """Bad input that was skipped or fixed."""


class CacheError(ValueError):
    """A label cache file that cannot be used (the message says why); the labels are scanned again."""


def warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=2)


def parse_label_rows(text: str, num_classes: int, where: str):
    """Parse a label file's text.

    Args:
      text: file content.
      num_classes: classes are integers in [0, num_classes).
      where: file name used in messages.
    Returns:
      labels: (n, 5) float32 `cls cx cy w h` normalized, cleaned (clipped, zero-area and duplicate rows dropped).
      notes: list of warning messages for fixes that were made.
    Raises:
      ValueError naming `where` and the reason if the file must be skipped (the image counts as corrupt).
    """
    rows = [line.split() for line in text.strip().splitlines() if line.strip()]
    notes = []
    boxes = []
    for k, row in enumerate(rows):
        try:
            values = np.array(row, np.float64)
        except ValueError:
            raise ValueError(f"{where}: row {k + 1} is not numbers: {' '.join(row)!r}") from None
        if len(values) > 6 and len(values) % 2 == 1:  # a polygon: cls x1 y1 x2 y2 ...
            points = values[1:].reshape(-1, 2)
            lo, hi = points.min(0), points.max(0)
            values = np.array([values[0], *(lo + hi) / 2, *(hi - lo)])
        elif len(values) != 5:
            raise ValueError(f"{where}: row {k + 1} has {len(values)} columns, labels need 5 (cls cx cy w h)")
        boxes.append(values)
    if not boxes:
        return np.zeros((0, 5), np.float32), notes
    labels = np.stack(boxes)
    cls = labels[:, 0]
    if (cls != np.round(cls)).any() or cls.min() < 0 or cls.max() >= num_classes:
        bad = cls[(cls != np.round(cls)) | (cls < 0) | (cls >= num_classes)]
        raise ValueError(f"{where}: class id {bad[0]:g} outside [0, {num_classes - 1}] (dataset has {num_classes})")
    coords = labels[:, 1:]
    if coords.min() < -COORD_TOLERANCE or coords.max() > 1 + COORD_TOLERANCE:
        raise ValueError(f"{where}: coordinates outside [0, 1] (min {coords.min():g}, max {coords.max():g}); "
                         "labels must be normalized by the image size")
    if coords.min() < 0 or coords.max() > 1:
        notes.append(f"{where}: coordinates slightly outside [0, 1] clipped")
    xyxy = np.clip(np.concatenate([coords[:, :2] - coords[:, 2:] / 2, coords[:, :2] + coords[:, 2:] / 2], 1), 0, 1)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    labels = np.concatenate([cls[:, None], (xyxy[:, :2] + xyxy[:, 2:]) / 2, wh], 1).astype(np.float32)
    keep = (wh > 0).all(1)
    if not keep.all():
        notes.append(f"{where}: {int((~keep).sum())} zero-area box(es) dropped")
        labels = labels[keep]
    _, first = np.unique(labels, axis=0, return_index=True)
    if len(first) < len(labels):
        notes.append(f"{where}: {len(labels) - len(first)} duplicate label row(s) removed")
        labels = labels[np.sort(first)]
    return labels, notes


def verify_image(path: str):
    """Check an image file without decoding all of it.

    Args:
      path: image file.
    Returns:
      ((h, w) pixels, EXIF orientation applied; list of warning messages).
    Raises:
      ValueError naming the file and the reason when the image cannot be used.
    """
    from PIL import Image  # pillow comes with matplotlib

    notes = []
    try:
        with Image.open(path) as im:
            im.verify()
            fmt = (im.format or "").lower()
        with Image.open(path) as im:
            w, h = im.size
            if fmt in ("jpeg", "mpo") and im.getexif().get(274) in (6, 8):  # EXIF orientation: rotated 90 / 270
                w, h = h, w
    except Exception as e:  # PIL raises many types for bad files
        raise ValueError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if fmt not in IMG_FORMATS:
        raise ValueError(f"{path}: unsupported image format {fmt!r}")
    if h < 10 or w < 10:
        raise ValueError(f"{path}: image size {(h, w)} is under 10 pixels")
    if fmt == "jpeg":
        with open(path, "rb") as f:
            f.seek(-2, 2)
            if f.read() != b"\xff\xd9":
                notes.append(f"{path}: truncated JPEG (no end marker); decoded as is")
    return (h, w), notes


def _scan_one(args):
    """(im_file, label_file, num_classes) -> (record or None, status, messages).

    status is one of found / missing / empty / corrupt."""
    im_file, label_file, num_classes = args
    try:
        shape, notes = verify_image(im_file)
        if not os.path.isfile(label_file):
            labels, status = np.zeros((0, 5), np.float32), "missing"
        else:
            with open(label_file, errors="replace") as f:
                labels, more = parse_label_rows(f.read(), num_classes, label_file)
            notes += more
            status = "found" if len(labels) else "empty"
    except ValueError as e:
        return None, "corrupt", [f"{e}; image skipped"]
    record = {"im_file": im_file, "ori_shape": shape, "cls": labels[:, 0].astype(np.int32),
              "bboxes": labels[:, 1:].copy(), "image_id": _image_id(im_file)}
    return record, status, notes


def _image_id(im_file: str):
    stem = Path(im_file).stem
    return int(stem) if stem.isnumeric() else stem


def _files_hash(paths, num_classes) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}-{CACHE_VERSION}:{num_classes}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{p}:absent".encode())
    return h.hexdigest()


def scan_labels(im_files, label_files, num_classes, cache_path=None, workers=8):
    """Verify every image / label pair, with a cache keyed on the files' paths, sizes and times.

    Args:
      im_files, label_files: parallel lists of paths.
      num_classes: dataset class count.
      cache_path: where to keep the scan result (skipped with a warning if not writable); None: no cache.
      workers: threads used to read the files.
    Returns:
      (records: list[LabelRecord] of usable images in input order,
       counts: dict found / missing / empty / corrupt / total,
       messages: list of warnings, already emitted).
    """
    key = _files_hash(list(im_files) + list(label_files), num_classes)
    cached = _load_cache(cache_path, key)
    if cached is None:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(_scan_one, zip(im_files, label_files, [num_classes] * len(im_files))))
        counts = dict(found=0, missing=0, empty=0, corrupt=0, total=len(results))
        records, messages = [], []
        for record, status, notes in results:
            counts[status] += 1
            messages += notes
            if record is not None:
                records.append(record)
        cached = {"key": key, "records": records, "counts": counts, "messages": messages}
        _save_cache(cache_path, cached)
    for message in cached["messages"]:
        warn(message)
    return cached["records"], cached["counts"], cached["messages"]


def _load_cache(cache_path, key):
    """The cached scan if `cache_path` holds one for exactly these files (`key`), else None; a file that cannot be
    used is named in a warning with the reason."""
    if cache_path is None or not Path(cache_path).is_file():
        return None
    try:
        cached = read_label_cache(cache_path)
    except CacheError as e:
        reason = str(e)
    else:
        if cached["key"] == key:
            return cached
        reason = "stale: images or label files changed since it was written"
    warn(f"{cache_path}: label cache ignored ({reason}); rescanning the labels")
    return None


def read_label_cache(path) -> dict:
    """Read a cache file written by `write_label_cache` without ever unpickling.

    Returns:
      dict with `key` (hash of the covered files), `records` (list[LabelRecord]), `counts`, `messages`.
    Raises:
      CacheError with the reason the file cannot be used (not a yolojax cache, other version, damaged).
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":
        raise CacheError("an old pickle-format cache or a foreign pickle; not unpickled")
    if head != b"PK\x03\x04":
        raise CacheError("not a yolojax label cache (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
                raise CacheError("not a yolojax label cache (no yolojax header)")
            if meta.get("version") != CACHE_VERSION:
                raise CacheError(f"cache format version {meta.get('version')!r}, this yolojax reads {CACHE_VERSION}")
            sizes, cls, bboxes = z["sizes"].astype(np.int64), z["cls"].astype(np.int32), z["bboxes"]
        bboxes = bboxes.astype(np.float32).reshape(-1, 4)
        fields = list(zip(meta["im_files"], meta["ori_shapes"], meta["image_ids"], strict=True))
        if len(fields) != len(sizes) or sizes.sum() != len(cls) or len(cls) != len(bboxes):
            raise CacheError("damaged (label arrays do not match the image list)")
        bounds = np.cumsum(sizes)[:-1]
        records = [{"im_file": str(im_file), "ori_shape": tuple(int(v) for v in shape), "cls": c, "bboxes": b,
                    "image_id": image_id}
                   for (im_file, shape, image_id), c, b in zip(fields, np.split(cls, bounds), np.split(bboxes, bounds))]
        return {"key": str(meta["files_hash"]), "records": records, "counts": dict(meta["counts"]),
                "messages": [str(m) for m in meta["messages"]]}
    except CacheError:
        raise
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as e:
        raise CacheError(f"damaged ({type(e).__name__}: {e})") from None


def write_label_cache(file, cached) -> None:
    """Write a scan result (`key`, `records`, `counts`, `messages`, as `read_label_cache` returns) to `file`, a
    binary file object (np.savez would add `.npz` to a path), as an .npz of plain arrays."""
    records = cached["records"]
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "files_hash": cached["key"], "counts": cached["counts"],
            "messages": list(cached["messages"]), "im_files": [r["im_file"] for r in records],
            "ori_shapes": [[int(v) for v in r["ori_shape"]] for r in records],
            "image_ids": [r["image_id"] if isinstance(r["image_id"], str) else int(r["image_id"]) for r in records]}
    cls = [np.asarray(r["cls"], np.int32).reshape(-1) for r in records]
    bboxes = [np.asarray(r["bboxes"], np.float32).reshape(-1, 4) for r in records]
    np.savez(file, meta=np.array(json.dumps(meta)), sizes=np.array([len(c) for c in cls], np.int64),
             cls=np.concatenate(cls) if cls else np.zeros(0, np.int32),
             bboxes=np.concatenate(bboxes) if bboxes else np.zeros((0, 4), np.float32))


def _save_cache(cache_path, cached):
    if cache_path is None:
        return
    tmp = Path(f"{cache_path}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write_label_cache(f, cached)
        os.replace(tmp, cache_path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        warn(f"{cache_path}: label cache not written ({e})")


def summarize_counts(counts, where) -> str:
    return (f"{where}: {counts['found']} images with labels, {counts['missing'] + counts['empty']} backgrounds "
            f"({counts['missing']} missing, {counts['empty']} empty label files), {counts['corrupt']} corrupt")
