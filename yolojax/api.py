"""`yolojax.YOLO`: the train / val / predict / export workflow from Python, in the reference's style.

    from yolojax import YOLO
    model = YOLO("yolov8n.pt")                  # reference weights, a yolojax weights folder, or a model name
    run = model.train(data="custom.yaml", epochs=50, imgsz=640)   # fine-tunes; then `model` holds the best weights
    metrics = model.val()                       # mAP50, mAP50-95, per class
    results = model.predict("images/")          # boxes (n, 4) xyxy pixels, scores, classes per image
    model.export(format="onnx")

Each method runs what the matching `yolojax` command runs, with the same keys as keyword arguments: train is
`yolojax train`'s `run_training` (the loop, validated by yolojax.eval), val is `yolojax val`'s `validate`, predict
is `yolojax.eval.predict.predict` (files only with save=True / save_txt=True), export is
`yolojax.export.export_model`. Mistakes raise `yolojax.train.config.ConfigError` naming the key. GPU XLA flags:
call `yolojax.xla_flags.apply_default_xla_flags` before the first JAX computation, as the README says.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any, Mapping

from yolojax.cli import args
from yolojax.cli import val as val_command
from yolojax.cli.train import run_training
from yolojax.cli.weights import model_of_weights, resolve_weights, with_pretrained
from yolojax.convert.cache import REFERENCE_SUFFIXES, is_reference_file
from yolojax.eval.predict import Prediction, predict
from yolojax.train.config import Config, ConfigError, default_values, load_config, load_model_config, merge, validate
from yolojax.train.devices import restrict_platform
from yolojax.train.loop import TrainResult
from yolojax.train.records import load_args
from yolojax.xla_flags import enable_compilation_cache


@dataclasses.dataclass(frozen=True)
class ValMetrics:
    """Validation numbers (fractions in [0, 1]): mAP at IoU 0.5 and averaged over 0.5:0.95, precision and recall at
    the max-F1 confidence; per_class rows {name, images, instances, precision, recall, map50, map50_95}; details:
    everything `yolojax.eval.val.evaluate` returns (COCO numbers, confusion matrix, ...)."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    per_class: tuple[dict, ...]
    details: dict


class YOLO:
    """A detector and its weights. `model`: reference weights (.pt / .pth / .safetensors, imported once into the
    cache; an ultralytics checkpoint needs trust_pickle=True, since unpickling runs code from the file), a yolojax
    weights folder, or a model name of yolojax/configs/models (yolov8n ... yolov8x, faster_rcnn: no weights yet).

    Attributes: model (the model config name), weights (the weights folder or None), data (the dataset the weights
    were trained on, when known: the default of val), names {class id: name}, task ("detect").
    """

    task = "detect"

    def __init__(self, model: str | os.PathLike = "yolov8n", *, trust_pickle: bool = False):
        self.trust_pickle = bool(trust_pickle)
        self.weights: Path | None = None
        self.data: str | None = None
        self._names: list[str] = []
        if is_reference_file(model) or Path(model).is_dir():
            self._use_weights(model)
        else:
            try:
                load_model_config(os.fspath(model))
            except ConfigError as err:
                raise ConfigError(f"YOLO({os.fspath(model)!r}): not reference weights ({', '.join(REFERENCE_SUFFIXES)}"
                                  f"), a yolojax weights folder, nor a model name: {err}") from None
            self.model = os.fspath(model)

    def __repr__(self) -> str:
        return f"YOLO(model={self.model!r}, weights={str(self.weights) if self.weights else None!r})"

    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(self._names))

    def train(self, **overrides: Any) -> TrainResult:
        """Train (fine-tune from `weights` when set) with `yolojax train`'s keys as keyword arguments, e.g.
        `data=`, `epochs=`, `imgsz=`, `batch=` (cfg= picks the recipe as on the command line: the CPU recipe
        `shapes` by default, cfg=None the reference defaults). Returns the run's TrainResult (run_dir,
        last_metrics, ...); afterwards this object holds the run's best weights (its last without validation)."""
        cfg = self._train_config(overrides)
        enable_compilation_cache()
        restrict_platform(cfg.device)
        result = run_training(cfg)
        folder = result.run_dir / "weights"
        trained = next((folder / n for n in ("best", "last") if (folder / n / "meta.json").is_file()), None)
        if trained is not None:
            self._use_weights(trained)
        return result

    def val(self, **overrides: Any) -> ValMetrics:
        """Validate the weights with `yolojax val`'s keys as keyword arguments (data= defaults to the dataset they
        were trained on when known); prints the per-class table."""
        given = {"weights": str(self._required_weights("val")), **({"data": self.data} if self.data else {}),
                 **overrides}
        result = val_command.validate(command_options(val_command.COMMAND, given, "YOLO.val"))
        return ValMetrics(float(result["map50"]), float(result["map50_95"]), float(result["precision"]),
                          float(result["recall"]), tuple(result["per_class"]), result)

    def predict(self, source: Any, **overrides: Any) -> list[Prediction]:
        """Detect objects in `source` (image / video file, folder, glob, list, or BGR arrays) with
        `yolojax.eval.predict.predict`'s keywords (conf, iou, imgsz, max_det, classes, save, save_dir, ...); one
        Prediction per image or frame: boxes (n, 4) xyxy original-image pixels, scores, classes, names, path. Prints
        a line per image unless log=None."""
        source = os.fspath(source) if isinstance(source, os.PathLike) else source
        return predict(source, str(self._required_weights("predict")), **{"log": print, **overrides})

    def export(self, format: str = "onnx", **kwargs: Any) -> Any:
        """`yolojax.export.export_model(weights, format=..., **kwargs)` (imgsz, batch, half, nms, opset, out);
        returns what it returns. Needs the [export] extra."""
        weights = str(self._required_weights("export"))
        # imported on use: the exporter pulls in jax2onnx / onnx (the optional [export] extra)
        return importlib.import_module("yolojax.export").export_model(weights, format=format, **kwargs)

    def _use_weights(self, weights: str | os.PathLike) -> None:
        self.weights, meta = resolve_weights(os.fspath(weights), trust_pickle=self.trust_pickle)
        self.model = model_of_weights(meta, weights)
        self._names = [str(n) for n in meta.get("names") or range(int(meta["num_classes"]))]
        run_args = self.weights.absolute().parent.parent / "args.yaml"  # <run>/weights/best -> <run>/args.yaml
        self.data = str(load_args(run_args.parent).get("data")) if run_args.is_file() else self.data

    def _required_weights(self, what: str) -> Path:
        if self.weights is None:
            raise ConfigError(f"YOLO({self.model!r}).{what}: no weights; train it first or load weights "
                              "(YOLO('path/to/weights'))")
        return self.weights

    def _train_config(self, overrides: Mapping[str, Any]) -> Config:
        """The run's config: the recipe (cfg=), then this model and weights, then `overrides`; weights resolved."""
        overrides = plain_values(overrides)
        recipe = overrides.pop("cfg", default_values().cfg)
        base = load_config([f"cfg={recipe if recipe is not None else 'none'}"])
        given = {"model": self.model, "weights": str(self.weights) if self.weights else None, **overrides}
        cfg = merge(base, given, "YOLO.train")
        validate(cfg)
        if cfg.processes not in (1, "auto"):
            raise ConfigError(f"YOLO.train(processes={cfg.processes}): one process per GPU is `yolojax train "
                              "processes=...` on the command line; from Python this process trains on every device")
        model_given = "model" in overrides or "weights" not in overrides
        return with_pretrained(cfg, trust_pickle=self.trust_pickle, model_given=model_given)


def plain_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments as the config checks expect them: paths as text."""
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}


def command_options(command: args.Command, given: Mapping[str, Any], source: str) -> Config:
    """A command's defaults overlaid with `given` (Python values), checked as its command line is."""
    opts = merge(command.defaults, plain_values(given), source, command.types)
    args.check_choices(command, opts, source)
    return opts

