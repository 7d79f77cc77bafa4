"""Training configuration: `default.yaml` < recipe `<cfg>.yaml` < command-line `key=value` (files in yolojax.configs).

A config is a flat `Config` (a dict that also allows `cfg.lr0`). Every key must exist in `default.yaml`; its type is
the type of the default value (or `NULLABLE_TYPES` for keys whose default is empty, `UNION_TYPES` for keys that take
several). An unknown key or a value of the wrong type raises `ConfigError` naming
the key, where it came from and the closest valid key. The other commands' options (`yolojax.cli.args`) are
checked by the same `merge`, with the types of `allowed_types`.
"""
from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from yolojax.configs import config_path

CONFIG_DIR = config_path()
DEFAULT_FILE = CONFIG_DIR / "default.yaml"

# Keys whose default is empty (None): the type a value must have when given.
NULLABLE_TYPES: dict[str, tuple[type, ...]] = {
    "time": (float, int),
    "conf": (float, int),
    "weights": (str,),
    "device": (str, int),
}
# Keys that accept several types.
UNION_TYPES: dict[str, tuple[type, ...]] = {
    "resume": (bool, str),
    "cfg": (str,),
    "cache": (bool, str),
    "hsv_on_device": (bool, str),
    "warp_on_device": (bool, str),
    "processes": (int, str),
}


class ConfigError(ValueError):
    """A bad key or value in a config file or on the command line."""


class Config(dict):
    """A flat dict of settings that also reads as attributes (`cfg.lr0`)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}{suggestion(key, self)}") from None

    def replace(self, **updates: Any) -> "Config":
        return Config({**self, **updates})


def suggestion(key: str, valid: Iterable[str]) -> str:
    """`"; did you mean 'epochs'?"` for the closest of `valid` to `key`, or "" when none is close."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; raise ConfigError naming the file when it is missing, unparsable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(loaded).__name__}")
    return loaded


def allowed_types(key: str, default: Any) -> tuple[type, ...]:
    """The types a value of config key `key` may have, given its default (see the module docstring)."""
    if key in UNION_TYPES:
        return UNION_TYPES[key]
    if default is None:
        return NULLABLE_TYPES.get(key, (str,))
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (float, int)
    return (type(default),)


def check_value(key: str, value: Any, allowed: tuple[type, ...], source: str) -> Any:
    """`value` of `key` if it has one of the `allowed` types (an int given for a float key becomes a float); None
    stays None. Raises ConfigError naming the key otherwise."""
    if value is None:
        return None
    if float in allowed and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        names = " or ".join(t.__name__ for t in allowed)
        raise ConfigError(f"{source}: {key}={value!r} must be {names}, got {type(value).__name__}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def merge(base: Mapping[str, Any], updates: Mapping[str, Any], source: str,
          types: Mapping[str, tuple[type, ...]] | None = None) -> Config:
    """`base` with `updates` applied; every key must already be in `base` and keep its type: `types[key]` when
    given, else `allowed_types` of the value in `base` (see module doc)."""
    merged = Config(base)
    for key, value in updates.items():
        if key not in base:
            raise ConfigError(f"{source}: unknown key {key!r}{suggestion(key, base)}")
        if value == "" and base[key] is None:  # an empty value for a key whose default is empty
            value = None
        allowed = types[key] if types is not None else allowed_types(key, base[key])
        merged[key] = check_value(key, value, allowed, source)
    return merged


def parse_overrides(argv: Iterable[str], types: Mapping[str, tuple[type, ...]] | None = None) -> dict[str, Any]:
    """`["epochs=3", "cos_lr=true"]` -> `{"epochs": 3, "cos_lr": True}` (values parsed as YAML scalars).

    A key that takes only text (`types[key] == (str,)`) keeps the text as written (`name=007`, `scales=n,s`),
    except an empty value or null, which mean None.
    """
    overrides: dict[str, Any] = {}
    for arg in argv:
        key, sep, text = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"command line: expected key=value, got {arg!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if value is not None and types is not None and types.get(key) == (str,):
            value = text
        overrides[key] = value
    return overrides


@functools.cache
def _default_file_cached(path: Path) -> tuple[Config, dict[str, str]]:
    comment = re.compile(r"^(\w+):[^#]*#\s*(.*)$")
    lines = (comment.match(line) for line in path.read_text().splitlines())
    return Config(read_yaml(path)), {m[1]: m[2] for m in lines if m}


def default_values() -> Config:
    """default.yaml as a Config (a fresh copy: callers may change it)."""
    return Config(_default_file_cached(DEFAULT_FILE)[0])


def default_help() -> dict[str, str]:
    """default.yaml's comment of each key (`"(float) NMS IoU threshold"`), for `--help`."""
    return dict(_default_file_cached(DEFAULT_FILE)[1])


def recipe_path(name: str) -> Path:
    """A recipe name (`shapes`: the packaged `yolojax/configs/shapes.yaml`) or a path to a YAML file -> the file."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else CONFIG_DIR / f"{name}.yaml"


def load_config(argv: Iterable[str] = (), defaults_file: str | Path = DEFAULT_FILE) -> Config:
    """Defaults, then the recipe named by `cfg` (from the command line if given there), then the overrides."""
    defaults = Config(read_yaml(defaults_file))
    overrides = parse_overrides(argv, {key: allowed_types(key, value) for key, value in defaults.items()})
    recipe = overrides.get("cfg", defaults.get("cfg"))
    cfg = defaults
    if recipe and str(recipe).lower() not in ("none", "null"):
        path = recipe_path(str(recipe))
        cfg = merge(cfg, read_yaml(path), str(path))
    cfg = merge(cfg, overrides, "command line")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    processes = cfg.get("processes", 1)  # runs saved before the key existed lack it
    checks = [
        ("epochs", cfg.epochs >= 1, "must be >= 1"),
        ("batch", cfg.batch >= 1, "must be >= 1"),
        ("imgsz", cfg.imgsz >= 32 and cfg.imgsz % 32 == 0, "must be a positive multiple of 32"),
        ("nbs", cfg.nbs >= 1, "must be >= 1"),
        ("lr0", cfg.lr0 > 0, "must be > 0"),
        ("lrf", 0 < cfg.lrf <= 1, "must be in (0, 1]"),
        ("fraction", 0 < cfg.fraction <= 1, "must be in (0, 1]"),
        ("optimizer", cfg.optimizer in ("SGD", "Adam", "AdamW", "auto"), "must be SGD, Adam, AdamW or auto"),
        ("hsv_on_device", isinstance(cfg.hsv_on_device, bool) or cfg.hsv_on_device == "auto",
         "must be true, false or auto"),
        ("warp_on_device", isinstance(cfg.warp_on_device, bool) or cfg.warp_on_device == "auto",
         "must be true, false or auto"),
        ("processes", processes == "auto" or (type(processes) is int and processes >= 1),
         "must be auto or a count >= 1"),
        ("device", parse_device(cfg.get("device")) != (), "must be cpu, gpu, tpu or device ids such as 0 or 0,1"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"config: {key}={cfg[key]!r} {why}")


DEVICE_PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


def parse_device(spec: Any) -> str | tuple[int, ...] | None:
    """The `device` key: None or "" (every device), a platform ("cpu", "gpu" (or "cuda", "rocm"), "tpu") or device
    ids (`0`, `"0,1"`: positions among each process's devices) -> None, the platform, or the ids; () if malformed."""
    if spec is None or spec == "":
        return None
    text = str(spec).strip().lower()
    if text in DEVICE_PLATFORMS:
        return DEVICE_PLATFORMS[text]
    parts = text.split(",")
    return tuple(int(p) for p in parts) if all(p.strip().isdigit() for p in parts) else ()


def load_model_config(name: str) -> dict[str, Any]:
    """`yolojax/configs/models/<name>.yaml` (or a YAML path) -> its mapping; must name a `family`."""
    path = Path(name) if Path(name).suffix in (".yaml", ".yml") else CONFIG_DIR / "models" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "models").glob("*.yaml"))
        raise ConfigError(f"model={name!r}: no file {path}{suggestion(name, known)} (known: {', '.join(known)})")
    spec = read_yaml(path)
    if "family" not in spec:
        raise ConfigError(f"{path}: missing required key 'family'")
    return spec
