"""The decoded, resized images the augmentation reads: a per-process LRU cache, or one file every process maps."""
from __future__ import annotations

import os
import pickle
import tempfile
import threading
import weakref
from collections import OrderedDict

import numpy as np

from yolojax.data import transforms as T
from yolojax.data.labels import warn
from yolojax.data.sources import load_sample


class ImageStore:
    """Images resized so the long side is `imgsz`, with their labels as xyxy pixels. Kept as BGRA for OpenCV's fast
    4-channel warps, or BGR (`bgra=False`) when the warp runs on the device and the tiles go to the batch as they are.

    Without preloading, each process (grain worker) keeps an LRU cache of recent images (emptied when the store is
    pickled into a worker). `preload` (cache=ram) decodes every image once and packs them into one file mapped
    read-only by every process, so spawned workers share the pages instead of each unpickling a copy. Thread-safe.
    """

    def __init__(self, source, max_cache_bytes=512 << 20, bgra=True):
        self.source, self.bgra = source, bgra
        self.max_cache_bytes = max_cache_bytes
        self._shared_path, self._shared_index, self._mapped = None, {}, None
        self._cache, self._bytes, self._lock = OrderedDict(), 0, threading.Lock()

    def preload(self, indices, imgsz, path=None):
        """Decode every image of `indices` at `imgsz` into the shared file (see the class docstring). path: write
        there, with the index beside it (`path + ".index"`), for other processes of this host to `attach`."""
        shared = path is not None
        if path is None:
            fd, path = tempfile.mkstemp(prefix="yolojax_ram_cache_", suffix=".u8")
            out = os.fdopen(fd, "wb")
        else:
            out = open(path, "wb")
        path = str(path)
        weakref.finalize(self, _remove_files, path, path + ".index")  # the creating process owns the files
        index = {}
        with out as f:  # one image in memory at a time
            for i in indices:
                image, cls, boxes, record = self._load(i, imgsz)
                index[(int(i), int(imgsz))] = (f.tell(), image.shape, cls, boxes, record)
                f.write(np.ascontiguousarray(image).data)
        if shared:
            with open(path + ".index.tmp", "wb") as f:
                pickle.dump(index, f)
            os.replace(path + ".index.tmp", path + ".index")
        self._shared_path, self._shared_index, self._mapped = path, index, None

    def attach(self, path) -> None:
        """Read the images another process of this host `preload`ed into `path` (no decoding here)."""
        with open(str(path) + ".index", "rb") as f:
            index = pickle.load(f)
        self._shared_path, self._shared_index, self._mapped = str(path), index, None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock")
        state["_cache"], state["_bytes"], state["_mapped"] = OrderedDict(), 0, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def get(self, index, imgsz):
        """(image (h, w, 4) uint8 BGRA (3, BGR, without `bgra`) with max(h, w) == imgsz, cls (n,), boxes (n, 4)
        xyxy px, record)."""
        key = (int(index), int(imgsz))
        shared = self._shared_index.get(key)
        if shared is not None:
            offset, shape, cls, boxes, record = shared
            if self._mapped is None:
                self._mapped = np.memmap(self._shared_path, np.uint8, "r")
            return self._mapped[offset:offset + int(np.prod(shape))].reshape(shape), cls, boxes, record
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        item = self._load(index, imgsz)
        with self._lock:
            self._cache[key] = item
            self._bytes += item[0].nbytes
            while self._bytes > self.max_cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old[0].nbytes
        return item

    def _load(self, index, imgsz):
        record, image = load_sample(self.source, int(index))
        if image is None:
            warn(f"{record['im_file']}: image could not be decoded; using a blank image without labels")
            h0, w0 = record["ori_shape"]
            image = np.full((h0, w0, 3), T.PAD_VALUE, np.uint8)
            record = dict(record, cls=record["cls"][:0], bboxes=record["bboxes"][:0])
        image = T.resize_long_side(image, imgsz)
        image = T.to_bgra(image) if self.bgra else image
        h, w = image.shape[:2]
        return image, record["cls"], T.xywhn_to_xyxy(record["bboxes"], w, h), record


def _remove_files(*paths):
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass
