"""Random-access detection sources: YOLO-format folders, COCO instances JSON, and tfds data sources.

Every source has the same small interface, used by `yolojax.data.pipeline`:

    len(source)                 number of usable images
    source.names                tuple of class names (index = class id)
    source.record(i)            LabelRecord dict: im_file, ori_shape (h0, w0), cls (n,) int32,
                                bboxes (n, 4) float32 normalized xywh, image_id
    source.read_image(i)        (h0, w0, 3) uint8 BGR, or None if it cannot be decoded (the loader warns)

Sources are plain picklable objects (grain worker processes receive a copy). File sources (YOLO, COCO) take
`source.disk_cache = True` (cfg cache=disk): each decoded image is kept as a .npy file beside its image file, as the
reference does, written on first read and read instead of decoding the image later (while not older than it).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolojax.data.labels import (
    IMG_FORMATS,
    scan_labels,
    summarize_counts,
    verify_image,
    warn,
)


class DataError(ValueError):
    """A mistake in a dataset (a missing yaml, folder or split, no class names): its message is one line naming the
    file and what is expected; `yolojax` prints it and exits with status 2."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data yaml, split folder or annotation file that does not exist."""


class NoImagesError(DataError, FileNotFoundError):
    """A dataset split has zero usable images."""


class NoLabelsError(DataError):
    """A train split whose images have no labels at all (and the user did not say it is background-only)."""


def require_labels(source, num_images: int, split: str) -> None:
    """Raise NoLabelsError (one line: the split's folders and what labels were expected) when none of the first
    `num_images` images of a file source has a box. Sources without a record list (tfds) are not checked."""
    records = getattr(source, "records", None)
    if records is None or any(len(r["cls"]) for r in records[:num_images]):
        return
    where = ", ".join(getattr(source, "split_paths", ())) or split
    scan = getattr(source, "summary", None) or f"{num_images} images, none with a box"
    raise NoLabelsError(f"{where}: no labelled images in the {split} split ({scan}); expected "
                        f"{getattr(source, 'label_hint', 'labels')}. Set allow_background_only=True if the split is "
                        "background images on purpose")


def load_data_yaml(path):
    """Read a data yaml (the reference's layout) and resolve its split paths.

    Args:
      path: yaml file with `path` (root; relative to the yaml's folder), `train` / `val` / `test` (a folder, a .txt
        list of image paths, or a list of those, relative to `path`) and `names` (list or {id: name}); `names` may
        be left out when the splits are COCO instances files (`{split}_json`), whose categories name the classes.
    Returns:
      dict with `names` (tuple; empty when the COCO categories give them), `nc`, and each present split as a list of
      absolute paths (str).
    Raises DataError (one line naming the file) when the yaml is missing, not a mapping, or names no classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"data={path}: data yaml not found")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise DataError(f"data={path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise DataError(f"data={path}: expected a mapping with path, train, val and names")
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        if "nc" in data:
            names = [f"class{i}" for i in range(int(data["nc"]))]
        elif not any(key.endswith("_json") for key in data):
            raise DataError(f"data={path}: no `names` (a list, or a mapping id: name, of the class names; or `nc`, "
                            "or COCO instances files as `train_json` / `val_json`)")
        names = names or []
    root = Path(data.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    out = {"names": tuple(str(n) for n in names), "nc": len(names), "root": str(root), "yaml": str(path)}
    for split in ("train", "val", "test"):
        spec = data.get(split)
        if spec:
            specs = spec if isinstance(spec, (list, tuple)) else [spec]
            out[split] = [str(p if Path(p).is_absolute() else root / p) for p in specs]
    return out


def require_split(data: dict, split: str) -> None:
    """DataError naming the yaml and the splits it has when `data` (of `load_data_yaml`) has no `split`."""
    if split not in data:
        present = [name for name in ("train", "val", "test") if name in data]
        raise DataError(f"data={data['yaml']}: no `{split}` split (it has {', '.join(present) or 'none'})")


def list_images(specs):
    """Image files of a split: folders (searched recursively) and .txt files of paths; sorted, absolute."""
    files = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files += [str(f) for f in p.rglob("*.*") if f.suffix[1:].lower() in IMG_FORMATS]
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    f = Path(line)
                    files.append(str(f if f.is_absolute() else (p.parent / f).resolve()))
        else:
            raise DataNotFoundError(f"{p}: split path does not exist (a folder of images or a .txt list of image "
                                    "paths, relative to the data yaml's `path`)")
    return sorted(files)


def label_path_for(im_file: str) -> str:
    """`.../images/.../x.jpg` -> `.../labels/.../x.txt` (the last `images` folder is replaced)."""
    sep_images, sep_labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, found, tail = im_file.rpartition(sep_images)
    base = f"{head}{sep_labels}{tail}" if found else im_file
    return str(Path(base).with_suffix(".txt"))


def read_bgr(path: str):
    """Decode an image file to (h, w, 3) uint8 BGR, or None."""
    return cv2.imread(path, cv2.IMREAD_COLOR)


class _FileRecords:
    """Random access over `self.records` (dicts with an `im_file`) for grain: len, record(i), read_image(i)."""

    disk_cache = False

    def __len__(self):
        return len(self.records)

    def record(self, i):
        return self.records[i]

    def read_image(self, i):
        path = self.records[i]["im_file"]
        if not self.disk_cache:
            return read_bgr(path)
        npy = Path(path).with_suffix(".npy")
        cached = _read_npy(npy, path)
        if cached is not None:
            return cached
        image = read_bgr(path)
        if image is not None and not _write_npy(npy, image):
            self.disk_cache = False  # this process stops trying; _write_npy warned
        return image


def _read_npy(npy: Path, image_file: str):
    """The decoded image (h0, w0, 3) uint8 BGR kept in `npy`, or None when there is none, it is older than the image
    file or unreadable."""
    try:
        if npy.stat().st_mtime < os.stat(image_file).st_mtime:
            return None
        return np.load(npy, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        warn(f"{npy}: unreadable cache=disk file ({err}); decoding {image_file} instead")
        return None


def _write_npy(npy: Path, image) -> bool:
    """Write `image` (h0, w0, 3) uint8 BGR to `npy` whole or not at all (several worker processes may write the same
    file). Returns whether it was written."""
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, image, allow_pickle=False)
        os.replace(tmp, npy)
        return True
    except OSError as err:
        warn(f"cache=disk: cannot write {npy} ({err}); this process decodes the images each time")
        try:
            os.remove(tmp)
        except OSError:
            pass
        return False


class YoloSource(_FileRecords):
    """A split of a YOLO-format dataset (data yaml + images/ + labels/*.txt), scanned once, with a cache file."""

    def __init__(self, data_yaml, split="train", *, use_cache_file=True):
        data = load_data_yaml(data_yaml)
        require_split(data, split)
        self.names = data["names"]
        self.split_paths = tuple(data[split])
        im_files = list_images(data[split])
        label_files = [label_path_for(f) for f in im_files]
        label_dir = Path(label_files[0]).parent if label_files else "labels/"
        self.label_hint = (f"YOLO .txt label files in the labels/ folder next to images/ ({label_dir}), one "
                           "`cls cx cy w h` row (normalized) per object")
        cache = None
        if use_cache_file and label_files:
            cache = Path(label_files[0]).parent.with_suffix(".yolojax.cache")
            if not cache.parent.is_dir():
                cache = None
        self.records, self.counts, _ = scan_labels(im_files, label_files, len(self.names), cache)
        self.summary = summarize_counts(self.counts, f"{data_yaml} [{split}]")
        if not self.records:
            raise NoImagesError(f"{data_yaml} [{split}]: zero usable images ({self.summary}); "
                                f"looked in {data[split]}")


class CocoSource(_FileRecords):
    """COCO instances JSON + image folder. Categories map to contiguous class ids in ascending category-id order;
    crowd and zero-area annotations are dropped; images without annotations are kept as backgrounds."""

    def __init__(self, json_file, image_dir, *, check_images=True, names=()):
        if not Path(json_file).is_file():
            raise DataNotFoundError(f"{json_file}: COCO instances file not found")
        if not Path(image_dir).is_dir():
            raise DataNotFoundError(f"{image_dir}: image folder of {json_file} not found")
        with open(json_file) as f:
            coco = json.load(f)
        cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
        self.names = tuple(c["name"] for c in cats)
        warn_if_names_differ(tuple(names), self.names, json_file)
        self.category_ids = tuple(c["id"] for c in cats)
        cat_to_cls = {c["id"]: i for i, c in enumerate(cats)}
        self.split_paths = (str(image_dir),)
        self.label_hint = f"annotations in {json_file}"
        per_image = {}
        for ann in coco.get("annotations", []):
            per_image.setdefault(ann["image_id"], []).append(ann)
        self.records = []
        skipped = 0
        for img in coco.get("images", []):
            im_file = str(Path(image_dir) / img["file_name"])
            if check_images:
                try:
                    verify_image(im_file)
                except ValueError as e:
                    warn(f"{e}; image skipped")
                    skipped += 1
                    continue
            record = self._record(img, per_image.get(img["id"], []), cat_to_cls, im_file, json_file)
            self.records.append(record)
        if not self.records:
            raise NoImagesError(f"{json_file}: zero usable images in {image_dir} ({skipped} unreadable)")

    @staticmethod
    def _record(img, anns, cat_to_cls, im_file, json_file):
        h, w = float(img["height"]), float(img["width"])
        cls, boxes = [], []
        for ann in anns:
            if ann.get("iscrowd", 0):
                continue
            if ann["category_id"] not in cat_to_cls:
                warn(f"{json_file}: annotation {ann.get('id')} has unknown category {ann['category_id']}; dropped")
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x1, y1 = np.clip([x / w, y / h], 0, 1)
            x2, y2 = np.clip([(x + bw) / w, (y + bh) / h], 0, 1)
            if x2 <= x1 or y2 <= y1:
                continue
            cls.append(cat_to_cls[ann["category_id"]])
            boxes.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        return {"im_file": im_file, "ori_shape": (int(h), int(w)), "cls": np.asarray(cls, np.int32),
                "bboxes": np.asarray(boxes, np.float32).reshape(-1, 4), "image_id": img["id"]}


def warn_if_names_differ(yaml_names: tuple, json_names: tuple, json_file) -> None:
    """Warn, naming both lists, when a data yaml's `names` are not the COCO categories (which are used)."""
    if yaml_names and tuple(map(str, yaml_names)) != tuple(json_names):
        warn(f"{json_file}: its categories {list(json_names)} are used; the data yaml's names "
             f"{list(map(str, yaml_names))} differ and are ignored")


def tfds_example_to_record(example, index, name):
    """Map a tfds COCO / VOC example to a LabelRecord (+ its RGB image).

    Both store `objects/bbox` as normalized `ymin, xmin, ymax, xmax` and `objects/label`; COCO's `is_crowd` objects
    are dropped, as are zero-area boxes.
    Returns:
      (record, image (h, w, 3) uint8 RGB)
    """
    image = np.asarray(example["image"])
    objects = example.get("objects", {})
    boxes = np.asarray(objects.get("bbox", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    labels = np.asarray(objects.get("label", np.zeros((0,))), np.int64).reshape(-1)
    n = min(len(boxes), len(labels))
    keep = np.ones(n, bool)
    if "is_crowd" in objects:
        keep &= ~np.asarray(objects["is_crowd"], bool).reshape(-1)[:n]
    boxes, labels = np.clip(boxes[:n][keep], 0, 1), labels[:n][keep]
    y1, y2 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    x1, x2 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    valid = (x2 > x1) & (y2 > y1)
    xywh = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)[valid]
    image_id = example.get("image/id", index)
    record = {"im_file": f"{name}[{index}]", "ori_shape": image.shape[:2], "cls": labels[valid].astype(np.int32),
              "bboxes": xywh.astype(np.float32).reshape(-1, 4), "image_id": int(np.asarray(image_id))}
    return record, image


class TfdsSource:
    """A `tfds.data_source(name, split=...)` (array_record) with COCO- or VOC-style features.

    Labels are read lazily with the image (tfds decodes both at once), so `record(i)` costs a decode; the pipeline
    reads both through `load(i)`.
    """

    def __init__(self, name, split="train", *, data_dir=None, data_source=None, names=None):
        import tensorflow_datasets as tfds

        self.name = f"{name}:{split}"
        self.source = data_source if data_source is not None else tfds.data_source(name, split=split,
                                                                                   data_dir=data_dir)
        if names is None:
            info = getattr(self.source, "dataset_info", None) or tfds.builder(name, data_dir=data_dir).info
            names = info.features["objects"]["label"].names
        self.names = tuple(names)
        if len(self.source) == 0:
            raise NoImagesError(f"tfds {self.name}: zero examples")

    def __len__(self):
        return len(self.source)

    def load(self, i):
        record, rgb = tfds_example_to_record(self.source[i], i, self.name)
        bad = (record["cls"] < 0) | (record["cls"] >= len(self.names))
        if bad.any():
            warn(f"tfds {self.name}[{i}]: {int(bad.sum())} label(s) outside [0, {len(self.names) - 1}] dropped")
            record["cls"], record["bboxes"] = record["cls"][~bad], record["bboxes"][~bad]
        if rgb.ndim == 2 or rgb.shape[-1] == 1:
            return record, cv2.cvtColor(rgb.reshape(rgb.shape[:2]), cv2.COLOR_GRAY2BGR)
        return record, np.ascontiguousarray(rgb[..., 2::-1])

    def record(self, i):
        return self.load(i)[0]

    def read_image(self, i):
        return self.load(i)[1]


def load_sample(source, i):
    """(record, image (h0, w0, 3) uint8 BGR or None) for any source."""
    if hasattr(source, "load"):
        return source.load(i)
    return source.record(i), source.read_image(i)
