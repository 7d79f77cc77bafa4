"""The one command-line parser of `yolojax CMD ...`: `key=value` options checked against the keys a command takes.

Rules, the same for every command:

- `key=value`: the value is read as a YAML scalar (`3`, `0.25`, `true`, `null`); a key that takes only text keeps
  the text as written (`scales=n,s`, `name=007`). Empty or `null` means None.
- `--key=value` is `key=value`; so is `--key value` for a key that does not take true/false, while for one that
  does (`small`, `cache`, `resume`) `--key` alone is `key=true` and `--no-key` is `key=false`. Dashes in the key
  read as underscores (`--max-boxes 16` is `max_boxes=16`).
- Any other token (no `=`, no leading `--`) is positional (`yolojax predict SOURCE`, `yolojax convert SRC DST`).
- `-h` / `--help` anywhere prints the command's usage and every key with its default.
- An unknown key, a value of the wrong type or outside a key's choices, or a wrong number of positional
  arguments raises `ConfigError` with one line that names the key (and the closest valid key); `run` prints it as
  `yolojax CMD: ...` and returns exit status 2.

A command's keys are configuration keys (`config_key`: type, default and description from default.yaml, the
default possibly overridden by the command) and its own (`own_key`). Checking and YAML parsing are
`yolojax.train.config`'s (`parse_overrides`, `merge`), so `yolojax train` and the other commands agree.
"""
from __future__ import annotations

import dataclasses
import sys
import textwrap
from typing import Any, Callable, Mapping, Sequence

from yolojax.train.config import (
    Config,
    ConfigError,
    allowed_types,
    default_help,
    default_values,
    merge,
    parse_overrides,
)

HELP_TOKENS = ("-h", "--help")
# default.yaml's own description of `data` points to files beside it, which means nothing on the command line
DATA_HELP = "(str) dataset: a name in yolojax/configs/data/ (shapes, coco, ...) or a data yaml path"
_UNSET = object()


@dataclasses.dataclass(frozen=True)
class Key:
    """One option: its default, the types a value may have, a one-line description, and optional choices."""

    default: Any
    types: tuple[type, ...]
    help: str
    choices: tuple[Any, ...] = ()


def config_key(name: str, default: Any = _UNSET, help: str | None = None) -> Key:
    """A default.yaml key: its types and description from the file; its default too unless the command has its own."""
    values = default_values()
    if name not in values:
        raise KeyError(f"{name!r} is not a key of default.yaml")
    return Key(values[name] if default is _UNSET else default, allowed_types(name, values[name]),
               help if help is not None else default_help().get(name, ""))


def own_key(default: Any, help: str, types: tuple[type, ...] | None = None, choices: tuple[Any, ...] = ()) -> Key:
    """A key of the command alone; its types are those of `default` unless given (they must be, for a None)."""
    if types is None:
        if default is None:
            raise ValueError("own_key: a None default needs explicit types")
        types = allowed_types("", default)
    return Key(default, types, help, choices)


def config_keys(names: Sequence[str] | None = None) -> dict[str, Key]:
    """`config_key` of each name (default: every key of default.yaml, in the file's order)."""
    return {name: config_key(name) for name in (names if names is not None else default_values())}


@dataclasses.dataclass(frozen=True)
class Command:
    """What `yolojax NAME` takes. `positional` names the required positional arguments, `optional` the ones that may
    follow them; `usage` lines replace the generated one; `notes` follow the key table in `--help`."""

    name: str
    summary: str
    keys: Mapping[str, Key]
    positional: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    usage: tuple[str, ...] = ()
    notes: str = ""
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)  # another name -> the key it sets

    @property
    def types(self) -> dict[str, tuple[type, ...]]:
        return {**{alias: self.keys[key].types for alias, key in self.aliases.items()},
                **{name: key.types for name, key in self.keys.items()}}

    @property
    def defaults(self) -> Config:
        return Config({name: key.default for name, key in self.keys.items()})


@dataclasses.dataclass(frozen=True)
class Parsed:
    """The options (defaults overlaid with the command line) and the positional arguments, in order."""

    opts: Config
    positional: list[str]


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_TOKENS for arg in argv)


def key_values(argv: Sequence[str], types: Mapping[str, tuple[type, ...]]) -> tuple[list[str], list[str]]:
    """Tokens -> (`key=value` strings, positional arguments): `--key ...` forms rewritten as `key=value` (rules in
    the module docstring; `types` tells which keys are booleans and take no value)."""
    assignments, positional = [], []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            (assignments if "=" in token else positional).append(token)
            continue
        name, sep, value = token[2:].partition("=")
        key = name.replace("-", "_")
        if sep:
            assignments.append(f"{key}={value}")
        elif bool in types.get(key, ()):
            assignments.append(f"{key}=true")
        elif key.startswith("no_") and bool in types.get(key[3:], ()):
            assignments.append(f"{key[3:]}=false")
        elif key in types:
            if i == len(tokens):
                raise ConfigError(f"command line: {token} needs a value")
            assignments.append(f"{key}={tokens[i]}")
            i += 1
        else:  # unknown: reported (with a suggestion) by the key check
            assignments.append(f"{key}=true")
    return assignments, positional


def check_choices(command: Command, opts: Config, source: str) -> None:
    """ConfigError naming `source` and the key when an option is not one of its key's allowed values."""
    for name, key in command.keys.items():
        if key.choices and opts[name] is not None and opts[name] not in key.choices:
            raise ConfigError(f"{source}: {name}={opts[name]!r} must be one of {', '.join(map(str, key.choices))}")


def parse(command: Command, argv: Sequence[str]) -> Parsed:
    """The command line of `command` -> its options and positional arguments; ConfigError on any mistake."""
    assignments, positional = key_values(argv, command.types)
    assignments = resolve_aliases(command, assignments)
    opts = merge(command.defaults, parse_overrides(assignments, command.types), "command line", command.types)
    check_choices(command, opts, "command line")
    low, high = len(command.positional), len(command.positional) + len(command.optional)
    if len(positional) > high:
        extra = positional[high]
        hint = " (options are key=value)" if not high else ""
        raise ConfigError(f"command line: unexpected argument {extra!r}{hint}")
    if len(positional) < low:
        raise ConfigError(f"command line: missing {' '.join(command.positional[len(positional):])}")
    return Parsed(opts, positional)


def resolve_aliases(command: Command, assignments: list[str]) -> list[str]:
    """`model=best.pt` -> `weights=best.pt` for a command whose `aliases` say so (the reference's names); giving
    both names is a ConfigError."""
    given = {a.partition("=")[0].strip() for a in assignments}
    resolved = []
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        target = command.aliases.get(key.strip())
        if target is not None:
            if target in given:
                raise ConfigError(f"command line: {key.strip()}= is another name for {target}=; give one of them")
            assignment = f"{target}={value}"
        resolved.append(assignment)
    return resolved


def show(value: Any) -> str:
    """A default as it is typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def help_text(command: Command, width: int = 120) -> str:
    """Usage, summary, and one line per key: `key=default  description` (wrapped to `width` columns)."""
    args = " ".join([*command.positional, *(f"[{name}]" for name in command.optional)])
    usage = command.usage or (f"yolojax {command.name} {args + ' ' if args else ''}[key=value ...]",)
    lines = [f"usage: {usage[0]}", *(f"       {line}" for line in usage[1:]), "",
             textwrap.fill(command.summary, width), "", "keys (key=default):"]
    column = max((len(name) + len(show(key.default)) + 1 for name, key in command.keys.items()), default=0) + 4
    for name, key in command.keys.items():
        choices = f" [{'|'.join(map(show, key.choices))}]" if key.choices else ""
        lines.append(textwrap.fill(f"{key.help}{choices}", width, initial_indent=f"  {name}={show(key.default)}"
                                   .ljust(column), subsequent_indent=" " * column))
    if command.aliases:
        lines += ["", "also: " + ", ".join(f"{alias}= for {key}=" for alias, key in command.aliases.items())]
    if command.notes:
        lines += ["", textwrap.fill(command.notes, width)]
    lines += ["", textwrap.fill("`--key=value` reads as key=value, as does `--key value` for a key that does not take "
                                "true/false; for one that does, `--key` is key=true and `--no-key` key=false.", width)]
    return "\n".join(lines)


def fail(name: str, err: Exception) -> int:
    """Print `yolojax NAME: <the error's one line>` to stderr; the CLI's exit status for a usage error."""
    print(f"yolojax {name}: {err}", file=sys.stderr)
    return 2


def run(command: Command, argv: Sequence[str], main: Callable[[Parsed], int]) -> int:
    """`--help`, or parse then `main(parsed)`; a ConfigError from either is printed and gives exit status 2."""
    if wants_help(argv):
        print(help_text(command))
        return 0
    try:
        return main(parse(command, argv))
    except ConfigError as err:
        return fail(command.name, err)
