"""`yolojax train [key=value ...]`: the training run of `yolojax.train.loop`, validated by `yolojax.eval`."""
from __future__ import annotations

import os
import sys

from yolojax.cli import args, launch
from yolojax.cli.weights import TRAIN_KEYS, assigns, split_trust_pickle, with_pretrained
from yolojax.data.sources import NoLabelsError
from yolojax.eval.artefacts import validate_best
from yolojax.eval.val import evaluate_ema
from yolojax.train.config import Config, ConfigError, default_values, load_config, read_yaml, recipe_path
from yolojax.train.devices import restrict_platform
from yolojax.train.distributed import describes_a_job
from yolojax.train.loop import NonFiniteLossError, TrainResult, train
from yolojax.xla_flags import apply_default_xla_flags, enable_compilation_cache


def recipe_note(recipe) -> str:
    """What the default recipe changes, for `--help` (whose key table shows default.yaml's values)."""
    if not recipe or str(recipe).lower() in ("none", "null"):
        return ""
    changes = " ".join(f"{k}={args.show(v)}" for k, v in read_yaml(recipe_path(str(recipe))).items())
    return (f"Without cfg=none, the recipe cfg={recipe} overlays the defaults above with: {changes}. Files named "
            "in the descriptions (`beside this file`, `here`) are in yolojax/configs/.")


COMMAND = args.Command(
    name="train",
    summary="Train a detector. With no arguments: YOLOv8n on the embedded shapes dataset with the CPU recipe "
            "`shapes`. resume=true continues the latest run (resume=runs/train3 a given one). Ctrl-C saves a "
            "checkpoint and exits.",
    keys={**args.config_keys(), **TRAIN_KEYS},
    notes=recipe_note(default_values().cfg),
)


def run_training(cfg: Config) -> TrainResult:
    """The run `yolojax train` (and `yolojax.YOLO.train`) makes of a checked config: the loop, validated by
    yolojax.eval every epoch and, at the end, on the best weights (the per-class table)."""
    return train(cfg, evaluate=evaluate_ema, final_validation=validate_best)


def launch_children(argv: list[str], cfg: Config, children: list[dict[str, str]]) -> int:
    """This run as one process per entry of `children` (yolojax.cli.launch); their exit status."""
    where = ", ".join(env.get("CUDA_VISIBLE_DEVICES", "cpu") for env in children)
    print(f"yolojax train: {len(children)} processes (jax.distributed on 127.0.0.1), devices {where}", flush=True)
    command = [sys.executable, "-m", "yolojax.cli", "train",
               *launch.child_arguments(argv, cfg.device, cfg.workers, len(children), os.cpu_count())]
    return launch.run_children(command, children)


def cli_main(argv: list[str]) -> int:
    launch.stop_with_launcher()
    if args.wants_help(argv) or argv[:1] == ["help"]:
        print(args.help_text(COMMAND))
        return 0
    try:
        assignments, positional = args.key_values(argv, COMMAND.types)
        if positional:
            raise ConfigError(f"command line: unexpected argument {positional[0]!r} (options are key=value)")
        trust_pickle, assignments = split_trust_pickle(assignments)
        cfg = load_config(assignments)  # the recipe (cfg=) sits between default.yaml and the command line
        children = [] if describes_a_job() else launch.children_of(cfg)
    except ConfigError as err:
        return args.fail(COMMAND.name, err)
    if children:
        return launch_children(argv, cfg, children)
    apply_default_xla_flags(job="train", deterministic=bool(cfg.deterministic))  # before the first JAX computation
    enable_compilation_cache()
    restrict_platform(cfg.device)  # device=cpu: JAX never starts an accelerator
    try:
        cfg = with_pretrained(cfg, trust_pickle=trust_pickle, model_given=assigns(assignments, "model"))
    except ConfigError as err:
        return args.fail(COMMAND.name, err)
    try:
        result = run_training(cfg)
    except (NoLabelsError, ConfigError) as err:  # ConfigError: a device= this machine does not have
        return args.fail(COMMAND.name, err)
    except NonFiniteLossError as err:
        print(f"yolojax train: {err}", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0
