"""Inference sources (what `yolojax predict` reads): image files, folders, glob patterns, .txt lists of those,
video files (decoded by OpenCV), and images already in memory.

`list_media(source)` resolves a source to files (images first, then videos, each group sorted, as the reference's
loader orders them); `media_hw(files)` reads their sizes from file headers without decoding; `read_frames(media)`
decodes them one image or video frame at a time. A file that cannot be decoded is skipped with a `DataWarning`
naming it; the others go on.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Iterator, Sequence, Union

import cv2
import numpy as np

from yolojax.data.labels import IMG_FORMATS, warn

VID_FORMATS = frozenset({"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv", "webm"})
EXIF_ORIENTATION = 274  # the EXIF tag; values 5 to 8 turn the image a quarter, so height and width swap
# a source: a path (file, folder, glob pattern, .txt list), a list of paths, or BGR images (h, w, 3) uint8
Source = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded image, or one frame of a video.

    path: its file (`image<i>.jpg` for an in-memory image); image: (h, w, 3) uint8 BGR; frame: 1-based frame number
    in its video, None for an image; fps: frames per second of its video (None for an image).
    """

    path: str
    image: np.ndarray
    frame: int | None = None
    fps: float | None = None


def suffix_of(path: str) -> str:
    return path.rsplit(".", 1)[-1].lower() if "." in Path(path).name else ""


def is_video(path: str) -> bool:
    return suffix_of(path) in VID_FORMATS


def _expand(entry: str, parent: Path | None) -> list[str]:
    """One source entry -> the files it names (a glob, a folder's files, a file; relative to a list's folder)."""
    absolute = str(Path(entry).absolute())
    if any(c in entry for c in "*?["):
        return sorted(glob.glob(absolute, recursive=True))
    if os.path.isdir(absolute):
        return sorted(str(p) for p in Path(absolute).iterdir() if p.is_file())
    if os.path.isfile(absolute):
        return [absolute]
    if parent is not None and (parent / entry).is_file():
        return [str((parent / entry).absolute())]
    raise FileNotFoundError(f"source {entry} does not exist")


def list_media(source: Source) -> list[str] | list[np.ndarray]:
    """The image and video files of `source` (images first, then videos), or its in-memory images as a list.

    Args:
      source: an image or video file, a folder (its files, not recursive), a glob pattern (`imgs/*.jpg`,
        `**` recursive), a .txt file with one such entry per line (relative to the list's folder), a list of
        those, or a BGR image (h, w, 3) uint8 / a list of them.
    Raises:
      FileNotFoundError naming the entry that does not exist, or the source when it holds no image or video.
    """
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and source
                                          and all(isinstance(s, np.ndarray) for s in source)):
        images = [source] if isinstance(source, np.ndarray) else list(source)
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(f"source image {i}: expected (h, w, 3) uint8 BGR, got {image.shape} {image.dtype}")
        return images
    entries, parent = [str(s) for s in source] if isinstance(source, (list, tuple)) else [str(source)], None
    if len(entries) == 1 and suffix_of(entries[0]) == "txt" and os.path.isfile(entries[0]):
        parent = Path(entries[0]).parent
        entries = [line.strip() for line in Path(entries[0]).read_text().splitlines() if line.strip()]
    files = [f for entry in entries for f in _expand(entry, parent)]
    images = [f for f in files if suffix_of(f) in IMG_FORMATS]
    videos = [f for f in files if suffix_of(f) in VID_FORMATS]
    if not images and not videos:
        kinds = ", ".join(sorted(IMG_FORMATS | VID_FORMATS))
        raise FileNotFoundError(f"source {source}: no images or videos found ({kinds})")
    return images + videos


def image_hw(path: str) -> tuple[int, int] | None:
    """(h, w) of an image file as OpenCV decodes it (EXIF orientation applied), from its header; None if unknown."""
    from PIL import Image, UnidentifiedImageError  # optional: only the header is read

    try:
        with Image.open(path) as image:
            w, h = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return (w, h) if turned else (h, w)


def video_hw(path: str) -> tuple[int, int] | None:
    """(h, w) of a video's frames, from its container; None if OpenCV cannot open it."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            return None
        return int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        capture.release()


def media_hw(media: Sequence) -> list[tuple[int, int] | None]:
    """(h, w) of each file (image or video frame) or in-memory image, without decoding; None where unknown."""
    return [tuple(m.shape[:2]) if isinstance(m, np.ndarray) else video_hw(m) if is_video(m) else image_hw(m)
            for m in media]


def _video_frames(path: str, vid_stride: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        warn(f"predict: skipping {path}: not a readable video")
        return
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    number = 0
    try:
        while True:
            grabbed = all(capture.grab() for _ in range(vid_stride))
            ok, image = capture.retrieve() if grabbed else (False, None)
            if not ok:
                break
            number += 1
            yield Frame(path, image, number, fps)
    finally:
        capture.release()
    if number == 0:
        warn(f"predict: skipping {path}: no frame could be decoded")


def read_frames(media: Sequence, vid_stride: int = 1) -> Iterator[Frame]:
    """Decode `list_media`'s result in order: one Frame per image, one per `vid_stride`-th video frame.

    Unreadable files are skipped with a DataWarning naming the file and the reason.
    """
    for i, item in enumerate(media):
        if isinstance(item, np.ndarray):
            yield Frame(f"image{i}.jpg", item)
        elif is_video(item):
            yield from _video_frames(item, vid_stride)
        else:
            image = cv2.imread(item, cv2.IMREAD_COLOR)
            if image is None:
                warn(f"predict: skipping {item}: not a readable image")
            else:
                yield Frame(item, image)
