"""Detection on images and videos: `predict(source, detector, ...) -> list[Prediction]` (the Python entry point)
and `stream_predict` (what `yolojax predict` runs, yolojax/cli/predict.py), one Prediction per image or frame.

The model sits behind one boundary, the `Detector` protocol: a callable taking a batch of letterboxed images
(b, h, w, 3) uint8 RGB and the NMS settings, returning fixed-size rows. `JaxDetector` wraps a task and its weights
(one jitted forward + NMS per input shape); any other backend (e.g. ONNX Runtime) fits the same protocol.

Inputs follow the reference predictor: a centred letterbox to imgsz (BGR -> RGB; the detector divides by 255) and
boxes mapped back to original-image pixels. To keep compilations few, the whole source shares one input shape:
with rect=True, the minimal (stride-multiple) rectangle when every image letterboxes to the same one (the
reference's shape for a single image), else a square imgsz letterbox (the reference's shape for a batch of mixed
sizes). Batches are padded to `batch` images, so a run compiles at most two shapes.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.cache import cache_root
from yolojax.convert.cache import weights_folder
from yolojax.convert.files import read_weights
from yolojax.data.media import Frame, Source, list_media, media_hw, read_frames
from yolojax.data.transforms import letterbox
from yolojax.detectors import YOLOv8Task, inference_variables, task_from_weights_meta
from yolojax.detectors.postprocess import letterbox_gain_pad, scale_boxes
from yolojax.eval.predict_output import PredictionWriter, summary

STRIDE = 32


class PredictInputError(ValueError):
    """A bad option value given to predict (the message names the key)."""


@dataclasses.dataclass(frozen=True)
class NmsOptions:
    """Post-processing settings: keep scores > conf, NMS at iou, at most max_det rows per image; classes: keep only
    these class ids (None: all); agnostic: NMS across classes."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: tuple[int, ...] | None = None
    agnostic: bool = False


class Detector(Protocol):
    """What predict needs from a model (JAX, ONNX Runtime, ...).

    names: class names (index = class id). imgsz: the size it was trained / exported at, or None.
    input_hw: the one (h, w) it accepts (a static export), or None for any multiple of 32.
    __call__(images (b, h, w, 3) uint8 RGB letterboxed, nms) -> numpy dict, rows in descending score:
      boxes (b, max_det, 4) xyxy pixels of the input, scores (b, max_det), classes (b, max_det) int,
      valid (b, max_det) bool. Returning numpy means the device work is finished (predict's timings rely on it).
    """

    names: Sequence[str]
    imgsz: int | None
    input_hw: tuple[int, int] | None

    def __call__(self, images: np.ndarray, nms: NmsOptions) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's (or video frame's) detections in original-image pixels.

    path: the source file (`image<i>.jpg` for an in-memory image); frame: 1-based frame number in a video (None
    for an image); orig_shape: (h, w); boxes: (n, 4) float32 xyxy pixels; scores: (n,) float32; classes: (n,) int;
    names: class names; speed: milliseconds per image of each stage (preprocess, inference, postprocess).
    """

    path: str
    frame: int | None
    orig_shape: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: tuple[str, ...]
    speed: dict[str, float]


# ------------------------------------------------------------------------------------------- the JAX detector
def task_rows(task, variables, images, nms: NmsOptions) -> dict:
    """The task's fixed-size detections (protocol `predict`) for `images` (b, h, w, 3) uint8, with the class filter
    and agnostic NMS where asked (jit-able; see `Detector` for the outputs)."""
    return task.predict(variables, images, conf=nms.conf, iou=nms.iou, max_det=nms.max_det, classes=nms.classes,
                        agnostic=nms.agnostic)


class JaxDetector:
    """A task and its weights as a `Detector`: one jitted forward + NMS per (input shape, NMS settings).

    `variables` are the weights as loaded (the export reads them; they stay where they were given, host memory for
    loaded files); calls run the task's `inference_variables` of them, prepared on the device at the first call.
    `traces` counts how often the function was traced (once per new input shape or setting: the compile count).
    """

    input_hw = None

    def __init__(self, task, variables: dict, names: Sequence[str], imgsz: int | None = None):
        self.task, self.names, self.imgsz = task, tuple(names), imgsz
        self.variables = variables
        self.traces = 0
        self._jitted: dict[NmsOptions, Callable] = {}

    @functools.cached_property
    def inference_variables(self):
        return jax.device_put(inference_variables(self.task, self.variables))

    def supports(self, nms: NmsOptions) -> bool:
        """False for agnostic NMS on a two-stage task (its boxes are per class)."""
        return not nms.agnostic or isinstance(self.task, YOLOv8Task)

    def _rows(self, variables, images, nms):
        self.traces += 1
        return task_rows(self.task, variables, images, nms)

    def __call__(self, images: np.ndarray, nms: NmsOptions) -> dict[str, np.ndarray]:
        if nms not in self._jitted:
            def detect(variables, images):
                return self._rows(variables, images, nms)

            self._jitted[nms] = jax.jit(detect)
        rows = self._jitted[nms](self.inference_variables, jnp.asarray(images))
        return {key: np.asarray(value) for key, value in rows.items()}  # waits for the device


def load_jax_detector(weights, *, trust_pickle: bool = False) -> JaxDetector:
    """A yolojax weights directory, or reference weights (.pt / .pth / .safetensors, imported once into the cache as
    `train weights=` does; an ultralytics checkpoint also needs trust_pickle) -> JaxDetector. Raises a
    WeightsFileError (yolojax.convert.sources) naming the file or folder."""
    variables, meta = read_weights(weights_folder(weights, cache_root() / "imported", trust_pickle=trust_pickle))
    task = task_from_weights_meta(meta)
    names = list(meta.get("names") or [str(i) for i in range(task.num_classes)])
    return JaxDetector(task, variables, names, meta.get("imgsz"))


# ------------------------------------------------------------------------------------------------ input shapes
def rect_hw(orig_hw: tuple[int, int], imgsz: int, stride: int = STRIDE) -> tuple[int, int]:
    """(h, w) of the minimal-rectangle letterbox (`letterbox(image, imgsz, auto=True)`) of an (h0, w0) image."""
    h0, w0 = orig_hw
    r = min(imgsz / h0, imgsz / w0)
    h, w = int(round(h0 * r)), int(round(w0 * r))
    return h + (imgsz - h) % stride, w + (imgsz - w) % stride


@dataclasses.dataclass(frozen=True)
class InputPlan:
    """How every image of a run is letterboxed: to `new_hw` (h, w); with `rect_hw` set, images whose minimal
    rectangle is `rect_hw` get it instead (auto padding) and the others the full `new_hw`."""

    new_hw: tuple[int, int]
    rect_hw: tuple[int, int] | None = None

    def letterbox_args(self, orig_hw: tuple[int, int]) -> tuple[tuple[int, int], bool]:
        """(new_shape, auto) for `yolojax.data.transforms.letterbox` of an (h0, w0) image."""
        auto = self.rect_hw is not None and rect_hw(orig_hw, self.new_hw[0]) == self.rect_hw
        return self.new_hw, auto


def plan_inputs(sizes: Sequence[tuple[int, int] | None], imgsz: int, rect: bool,
                fixed_hw: tuple[int, int] | None = None) -> InputPlan:
    """One input shape for a whole source: `fixed_hw` if the detector has one; the shared minimal rectangle if
    `rect` and all known (h0, w0) sizes give the same; else a square imgsz letterbox."""
    if fixed_hw is not None:
        return InputPlan(tuple(fixed_hw))
    shapes = {rect_hw(size, imgsz) for size in sizes if size}
    return InputPlan((imgsz, imgsz), shapes.pop() if rect and len(shapes) == 1 else None)


def preprocess(frames: Sequence[Frame], plan: InputPlan, batch: int) -> np.ndarray:
    """Frames sharing one input shape -> (batch, h, w, 3) uint8 RGB letterboxed, zero rows after the frames."""
    boxed = []
    for frame in frames:
        new_shape, auto = plan.letterbox_args(frame.image.shape[:2])
        boxed.append(letterbox(frame.image, new_shape, auto=auto, stride=STRIDE)[0][:, :, ::-1])
    out = np.zeros((batch, *boxed[0].shape), np.uint8)
    out[:len(boxed)] = boxed
    return out


def input_hw_of(plan: InputPlan, orig_hw: tuple[int, int]) -> tuple[int, int]:
    new_hw, auto = plan.letterbox_args(orig_hw)
    return rect_hw(orig_hw, new_hw[0]) if auto else new_hw


def batches(frames: Iterator[Frame], plan: InputPlan, size: int) -> Iterator[list[Frame]]:
    """Consecutive frames grouped by input shape, at most `size` per group, in source order."""
    group: list[Frame] = []
    for frame in frames:
        if group and (len(group) == size or input_hw_of(plan, frame.image.shape[:2])
                      != input_hw_of(plan, group[0].image.shape[:2])):
            yield group
            group = []
        group.append(frame)
    if group:
        yield group


# --------------------------------------------------------------------------------------------------- the run
@dataclasses.dataclass(frozen=True)
class PredictOptions:
    nms: NmsOptions
    imgsz: int
    batch: int = 1
    rect: bool = True
    vid_stride: int = 1


def predict_options(detector: Detector, *, conf=0.25, iou=0.7, imgsz=None, max_det=300, classes=None,
                    agnostic_nms=False, batch=1, rect=True, vid_stride=1) -> PredictOptions:
    """Checked options (PredictInputError naming the key otherwise). imgsz None: the detector's size, else 640;
    classes: an int or a list of class ids."""
    imgsz = imgsz or detector.imgsz or 640
    if not isinstance(imgsz, int) or imgsz <= 0 or imgsz % STRIDE:
        raise PredictInputError(f"imgsz={imgsz} must be a positive multiple of {STRIDE}")
    conf = 0.25 if conf is None else conf  # the reference's predict default
    for key, value in (("conf", conf), ("iou", iou)):
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise PredictInputError(f"{key}={value} must be a number in [0, 1]")
    for key, value in (("max_det", max_det), ("batch", batch), ("vid_stride", vid_stride)):
        if not isinstance(value, int) or value < 1:
            raise PredictInputError(f"{key}={value} must be a positive integer")
    if classes is not None:
        classes = (classes,) if isinstance(classes, int) else tuple(classes)
        nc = len(detector.names)
        if not classes or any(not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < nc for c in classes):
            raise PredictInputError(f"classes={list(classes)} must be class ids in [0, {nc})")
    nms = NmsOptions(float(conf), float(iou), int(max_det), classes, bool(agnostic_nms))
    if not getattr(detector, "supports", lambda _: True)(nms):
        raise PredictInputError("agnostic_nms=True is not available for this model family")
    return PredictOptions(nms, imgsz, int(batch), bool(rect), int(vid_stride))


def on_original(rows: dict, i: int, input_hw: tuple[int, int], frame: Frame, names, speed) -> Prediction:
    """Row i of the detector's output -> a Prediction in original-image pixels."""
    valid = rows["valid"][i]
    orig_hw = frame.image.shape[:2]
    gain, pad = letterbox_gain_pad(input_hw, orig_hw)
    boxes = scale_boxes(np.asarray(rows["boxes"][i], np.float32)[valid], orig_hw, gain, pad)
    return Prediction(frame.path, frame.frame, tuple(orig_hw), boxes, np.asarray(rows["scores"][i])[valid],
                      np.asarray(rows["classes"][i])[valid].astype(int), tuple(names), speed)


def stream_predict(media: Sequence, detector: Detector, options: PredictOptions,
                   writer: PredictionWriter | None = None, log: Callable[[str], None] | None = None
                   ) -> Iterator[Prediction]:
    """Predictions for `list_media`'s result, one per image / video frame, in order (see the module docstring).

    writer: draws / writes each result (None: nothing written). log: receives one line per image and the speed
    line (the reference's format) at the end.
    """
    try:
        yield from _run(media, detector, options, writer, log)
    finally:
        if writer is not None:
            writer.close()


def _run(media, detector, options, writer, log) -> Iterator[Prediction]:
    plan = plan_inputs(media_hw(media), options.imgsz, options.rect, detector.input_hw)
    totals: collections.Counter = collections.Counter()
    seen, warmed, shape = 0, set(), None
    for group in batches(read_frames(media, options.vid_stride), plan, options.batch):
        start = time.perf_counter()
        images = preprocess(group, plan, options.batch)
        loaded = time.perf_counter()
        if images.shape not in warmed:  # compile (or load from the cache) outside the timings, as a warm-up
            detector(np.zeros_like(images), options.nms)
            warmed.add(images.shape)
        ready = time.perf_counter()
        rows = detector(images, options.nms)
        inferred = time.perf_counter()
        preds = [on_original(rows, i, images.shape[1:3], f, detector.names, {}) for i, f in enumerate(group)]
        done = time.perf_counter()
        speed = {"preprocess": (loaded - start) * 1e3, "inference": (inferred - ready) * 1e3,
                 "postprocess": (done - inferred) * 1e3}
        totals.update(speed)
        seen, shape = seen + len(group), images.shape
        for pred, frame in zip(preds, group):
            pred.speed.update({k: v / len(group) for k, v in speed.items()})
            if writer is not None:
                writer.write(pred, frame)
            if log is not None:
                where = f"{pred.path} (frame {pred.frame})" if pred.frame else pred.path
                log(f"{where}: {shape[1]}x{shape[2]} {summary(pred)}{pred.speed['inference']:.1f}ms")
            yield pred
    if log is not None and seen:
        per_image = [totals[k] / seen for k in ("preprocess", "inference", "postprocess")]
        log("Speed: {:.1f}ms preprocess, {:.1f}ms inference, {:.1f}ms postprocess per image at shape "
            "({}, 3, {}, {})".format(*per_image, min(options.batch, seen), shape[1], shape[2]))


def predict(source: Source, detector: Detector | str | Path, *, conf: float = 0.25, iou: float = 0.7,
            imgsz: int | None = None, max_det: int = 300, classes: int | Sequence[int] | None = None,
            agnostic_nms: bool = False, batch: int = 1, rect: bool = True, vid_stride: int = 1,
            save_dir: str | Path | None = None, save: bool = False, save_txt: bool = False, save_conf: bool = False,
            line_width: int | None = None, trust_pickle: bool = False,
            log: Callable[[str], None] | None = None) -> list[Prediction]:
    """Detections for every image / video frame of `source`, as plain arrays; files only when asked.

    Args:
      source: file, folder, glob, .txt list, list of those, or BGR image(s) (yolojax.data.media.list_media).
      detector: a `Detector`, or weights (yolojax weights directory, .pt / .safetensors) for `load_jax_detector`.
      conf, iou, max_det, classes, agnostic_nms: post-processing (the reference's predict keys and defaults).
      imgsz: letterbox size (None: the detector's, else 640); batch: images per model call; rect: minimal
        rectangle when the whole source shares one; vid_stride: every n-th video frame.
      save_dir: where `save` (drawn images / videos, predictions.json) and `save_txt` (labels/*.txt, with
        `save_conf` the confidence too) write; used as given (no numbering). line_width: box lines, pixels.
      log: receives per-image lines and the speed line (None: silent).
    Returns:
      one `Prediction` per image / frame, boxes in original-image pixels.
    """
    if isinstance(detector, (str, Path)):
        detector = load_jax_detector(detector, trust_pickle=trust_pickle)
    media = list_media(source)
    options = predict_options(detector, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, classes=classes,
                              agnostic_nms=agnostic_nms, batch=batch, rect=rect, vid_stride=vid_stride)
    writer = None
    if save or save_txt:
        if save_dir is None:
            raise PredictInputError("save / save_txt need save_dir")
        writer = PredictionWriter(save_dir, save=save, save_txt=save_txt, save_conf=save_conf,
                                  line_width=line_width)
    return list(stream_predict(media, detector, options, writer, log))
