"""What `yolojax predict` writes for each Prediction (`yolojax.eval.predict`), in the reference's layout:

  <name>                     save: the image with its boxes and `name conf` labels drawn
  <stem>.avi                 save, for a video: the annotated frames (MJPG, the source's frame rate)
  labels/<stem>.txt          save_txt: one line per detection, `class cx cy w h` normalized by the image size
  labels/<stem>_<frame>.txt    (+ ` conf` with save_conf); for a video one file per frame; none without detections
  predictions.json           all results: path, frame, (h, w), and per detection class, name, confidence, xyxy pixels
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

VIDEO_SUFFIX, VIDEO_FOURCC = ".avi", "MJPG"  # the reference's choice on Linux: every OpenCV build can write it


def yolo_txt_lines(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, orig_hw: tuple[int, int],
                   save_conf: bool = False) -> list[str]:
    """Detections -> `class cx cy w h [conf]` lines (numbers as `%g`), box normalized by the image width / height.

    Args:
      boxes: (n, 4) xyxy pixels of the original image; scores: (n,); classes: (n,) int; orig_hw: (h, w).
    """
    h0, w0 = orig_hw
    lines = []
    for (x1, y1, x2, y2), score, cls in zip(boxes, scores, classes):
        values = [(x1 + x2) / 2 / w0, (y1 + y2) / 2 / h0, (x2 - x1) / w0, (y2 - y1) / h0]
        values += [score] if save_conf else []
        lines.append(" ".join([str(int(cls)), *(f"{float(v):g}" for v in values)]))
    return lines


def class_name(names, cls: int) -> str:
    return names[cls] if 0 <= cls < len(names) else str(cls)


def summary(pred) -> str:
    """`2 cats, 1 dog, ` (class counts in class order), or `(no detections), `, as the reference prints them."""
    counts = collections.Counter(int(c) for c in pred.classes)
    if not counts:
        return "(no detections), "
    return "".join(f"{n} {class_name(pred.names, c)}{'s' * (n > 1)}, " for c, n in sorted(counts.items()))


def class_color(cls: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(cls)
    return tuple(int(c) for c in rng.integers(40, 230, 3))


def draw_detections(image_bgr: np.ndarray, pred, line_width: int | None = None) -> np.ndarray:
    """A copy of the image with each box and its `name conf` label drawn; line_width None: scaled to the image
    (max(round((h + w + 3) / 2 * 0.003), 2) pixels, the reference's rule)."""
    canvas = image_bgr.copy()
    thickness = int(line_width or max(round(sum(canvas.shape) / 2 * 0.003), 2))
    font_thickness, scale = max(thickness - 1, 1), thickness / 3
    for box, score, cls in zip(pred.boxes, pred.scores, pred.classes):
        color = class_color(int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f"{class_name(pred.names, int(cls))} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, font_thickness)
        top = y1 - th - 3 if y1 - th - 3 >= 0 else y1 + th + 3
        cv2.rectangle(canvas, (x1, y1), (x1 + tw, top), color, -1, cv2.LINE_AA)
        cv2.putText(canvas, label, (x1, y1 - 2 if top < y1 else top - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), font_thickness, cv2.LINE_AA)
    return canvas


def json_record(pred) -> dict[str, Any]:
    return {"image": pred.path, "frame": pred.frame, "shape": list(pred.orig_shape),
            "detections": [{"class": int(c), "name": class_name(pred.names, int(c)), "confidence": float(s),
                            "box_xyxy": [float(v) for v in b]}
                           for b, s, c in zip(pred.boxes, pred.scores, pred.classes)]}


class PredictionWriter:
    """Writes each Prediction under save_dir (layout in the module docstring); `close()` ends the videos and writes
    predictions.json. save_dir is used as given: the caller picks a fresh folder (`runs/predict2`, ...)."""

    def __init__(self, save_dir, *, save: bool = True, save_txt: bool = False, save_conf: bool = False,
                 line_width: int | None = None):
        self.save_dir = Path(save_dir)
        self.save, self.save_txt, self.save_conf, self.line_width = save, save_txt, save_conf, line_width
        (self.save_dir / "labels" if save_txt else self.save_dir).mkdir(parents=True, exist_ok=True)
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.records: list[dict] = []

    def label_path(self, pred) -> Path:
        stem = Path(pred.path).stem + ("" if pred.frame is None else f"_{pred.frame}")
        return self.save_dir / "labels" / f"{stem}.txt"

    def write(self, pred, frame) -> None:
        """pred: a Prediction; frame: its `yolojax.data.media.Frame` (the image drawn on, the video's fps)."""
        if self.save_txt:
            lines = yolo_txt_lines(pred.boxes, pred.scores, pred.classes, pred.orig_shape, self.save_conf)
            if lines:
                with open(self.label_path(pred), "a") as f:
                    f.writelines(f"{line}\n" for line in lines)
        if not self.save:
            return
        self.records.append(json_record(pred))
        drawn = draw_detections(frame.image, pred, self.line_width)
        name = Path(pred.path).name
        if pred.frame is None:
            cv2.imwrite(str(self.save_dir / name), drawn)
            return
        if pred.path not in self.videos:
            target = (self.save_dir / name).with_suffix(VIDEO_SUFFIX)
            self.videos[pred.path] = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*VIDEO_FOURCC),
                                                     int(round(frame.fps or 30)), (drawn.shape[1], drawn.shape[0]))
        self.videos[pred.path].write(drawn)

    def close(self) -> None:
        for video in self.videos.values():
            video.release()
        self.videos.clear()
        if self.save:
            (self.save_dir / "predictions.json").write_text(json.dumps(self.records, indent=1))
