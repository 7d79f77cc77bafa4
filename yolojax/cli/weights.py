"""The `weights=` of `yolojax train` and of `yolojax.YOLO`: a yolojax weights folder, or reference weights (.pt /
.pth / .safetensors) imported once into the cache (`yolojax.convert.cache`), checked before a run starts."""
from __future__ import annotations

import json
from pathlib import Path

from yolojax.cache import cache_root
from yolojax.cli import args
from yolojax.convert.cache import REFERENCE_SUFFIXES, weights_folder
from yolojax.convert.files import read_weights
from yolojax.convert.sources import WeightsFileError
from yolojax.detectors import build_task, task_from_weights_meta
from yolojax.train.config import CONFIG_DIR, Config, ConfigError, load_model_config, merge, parse_overrides

# val / predict / export take the weights to use as `model=` too, the name the reference's CLI gives them
WEIGHTS_ALIASES = {"model": "weights"}

# `yolojax train`'s keys about initial weights (trust_pickle is the command's own: runs do not record it)
TRAIN_KEYS = {
    "weights": args.config_key("weights", help="(str) initial weights: a yolojax weights folder or reference weights "
                                               "(.pt / .pth / .safetensors, imported once into the cache); every "
                                               "tensor whose name and shape fit is loaded, the others are initialised. "
                                               "Without model= on the command line, the weights' own model"),
    "trust_pickle": args.own_key(False, "(bool) allow unpickling an ultralytics .pt checkpoint (runs code from the "
                                        "file: only for files you trust)"),
}


def resolve_weights(weights, *, trust_pickle: bool = False) -> tuple[Path, dict]:
    """weights (a yolojax weights folder, or reference weights imported into `<cache>/imported`) -> (the folder,
    its meta). ConfigError naming `weights` when it is neither or cannot be read."""
    try:
        folder = weights_folder(weights, cache_root() / "imported", trust_pickle=trust_pickle)
    except WeightsFileError as err:
        raise ConfigError(f"weights={weights}: {str(err).removeprefix('convert: ')}") from None
    if not (folder / "meta.json").is_file():
        raise ConfigError(f"weights={weights}: not a yolojax weights folder (meta.json, arrays/) nor reference "
                          f"weights ({', '.join(REFERENCE_SUFFIXES)})")
    try:
        return folder, read_weights(folder)[1]
    except WeightsFileError as err:  # its message names the folder
        raise ConfigError(str(err)) from None


def model_of_weights(meta: dict, weights) -> str:
    """The model config (a name in yolojax/configs/models/) of weights with this meta; ConfigError if none fits."""
    task = task_from_weights_meta(meta)
    wanted = json.dumps(task.spec(), sort_keys=True)
    for path in sorted((CONFIG_DIR / "models").glob("*.yaml")):
        if json.dumps(build_task(load_model_config(path.stem), task.num_classes).spec(), sort_keys=True) == wanted:
            return path.stem
    raise ConfigError(f"weights={weights}: their model {task.spec()} is none of yolojax/configs/models/*.yaml; "
                      "pass model=<a model yaml> for it")


def with_pretrained(cfg: Config, *, trust_pickle: bool = False, model_given: bool = True) -> Config:
    """`cfg` with `weights` resolved to a yolojax weights folder (see `resolve_weights`) and, unless `model_given`,
    `model` set to the weights' own. Unchanged without weights or when resuming (the run's checkpoint decides)."""
    if not cfg.weights or cfg.resume:
        return cfg
    folder, meta = resolve_weights(cfg.weights, trust_pickle=trust_pickle)
    model = cfg.model if model_given else model_of_weights(meta, cfg.weights)
    return cfg.replace(weights=str(folder), model=model)


def split_trust_pickle(assignments: list[str]) -> tuple[bool, list[str]]:
    """`key=value` strings of the train command line -> (trust_pickle, the config's assignments)."""
    own = [a for a in assignments if key_of(a) == "trust_pickle"]
    key = TRAIN_KEYS["trust_pickle"]
    opts = merge(Config(trust_pickle=key.default), parse_overrides(own, {"trust_pickle": key.types}), "command line",
                 {"trust_pickle": key.types})
    return bool(opts.trust_pickle), [a for a in assignments if a not in own]


def key_of(assignment: str) -> str:
    """`"epochs=3"` -> `"epochs"`."""
    return assignment.partition("=")[0].strip()


def assigns(assignments: list[str], key: str) -> bool:
    """Whether the command line's `key=value` strings set `key`."""
    return any(key_of(a) == key for a in assignments)
