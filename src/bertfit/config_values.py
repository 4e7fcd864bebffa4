"""Turning YAML files and command-line flags into plain values, and values into the types config fields declare."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from bertfit.errors import BertfitError, ConfigError


def config_field(default: Any, help: str, check: Callable[[Any], bool] | None = None, rule: str = "") -> Any:
    """A dataclass field whose metadata carries its help text and an optional range check."""
    return field(default=default, metadata={"help": help, "check": check, "rule": rule})

def coerce(value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ValueError saying what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0])
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        # One bare value is a list of one: `--data.text_columns 1` (a header-less file's column) reads as a number.
        items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, (int, float)) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(coerce(item.strip() if isinstance(item, str) else item, args[0]).strip() for item in items)
    if origin is dict:  # keys as text (YAML reads `0:` as a number), values coerced
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping like {{a: b}}, got {value!r}")
        return {str(key).strip(): coerce(item, args[1]) for key, item in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(value)
    if hint is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected text, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {hint}")


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """`["--train.lr", "3e-5", "--data.train=x.csv"]` -> [("train.lr", "3e-5"), ("data.train", "x.csv")]."""
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError([f"unexpected argument {arg!r}: {_meant(arg)}"])
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError([f"{key}: missing value (write --{key} VALUE)"])
            i += 1
            value = args[i]
        pairs.append((key, _flag_value(value)))
        i += 1
    return pairs


def _meant(arg: str) -> str:
    """What a bare argument was likely meant as: a file is named by its field, so say which field takes it."""
    suffix = Path(arg).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return f"a config file is read with --config {arg}"
    if suffix in (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt") or Path(arg).is_dir():
        return f"a data file is named by its field: --data.train {arg} (and --data.test FILE for a test file)"
    return "overrides look like --train.lr 3e-5"


def _flag_value(value: str) -> Any:
    """A flag's value read as YAML (numbers, lists, booleans), or the text itself when it is not YAML (`...`)."""
    if not value.strip():
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BertfitError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise BertfitError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise BertfitError(f"{path}: expected a mapping of sections (data, model, train), got {type(raw).__name__}")
    return raw


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError([f"{dotted}: {part} is not a section"])
    node[leaf] = value


def build_dataclass(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """Instantiate dataclass `cls` from `raw`, appending every problem found to `problems`."""
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
        raw = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = " or ".join(prefix + name for name in difflib.get_close_matches(str(key), fields, n=2))
            hint = f" (did you mean {close}?)" if close else f" (known: {', '.join(fields)})"
            problems.append(f"{prefix}{key}: unknown field{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        where = f"{prefix}{name}"
        if dataclasses.is_dataclass(hints[name]):
            values[name] = build_dataclass(hints[name], raw[name], f"{where}.", problems)
            continue
        try:
            value = coerce(raw[name], hints[name])
        except ValueError as error:
            problems.append(f"{where}: {error}")
            continue
        check = f.metadata.get("check")
        if check is not None and value is not None and not check(value):
            problems.append(f"{where}: {f.metadata['rule']}, got {value!r}")
            continue
        values[name] = value
    return cls(**values)


@dataclass(frozen=True)
class FieldHelp:
    name: str  # dotted: train.lr
    help: str
    default: Any
    choices: tuple[str, ...] = ()  # the allowed values of a choice field (a Literal, or a list of them)


def field_help(root: type) -> list[FieldHelp]:
    """Every field of dataclass `root` (sections one level down) with its help, default and allowed values."""
    rows = []
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        if dataclasses.is_dataclass(hints[f.name]):
            section = typing.get_type_hints(hints[f.name])
            rows += [FieldHelp(f"{f.name}.{g.name}", g.metadata["help"], g.default, _choices(section[g.name]))
                     for g in dataclasses.fields(hints[f.name])]
        else:
            rows.append(FieldHelp(f.name, f.metadata["help"], f.default))
    return rows


def _choices(hint: Any) -> tuple[str, ...]:
    if typing.get_origin(hint) is Literal:
        return tuple(map(str, typing.get_args(hint)))
    return _choices(typing.get_args(hint)[0]) if typing.get_origin(hint) is tuple else ()


def duration_seconds(text: str) -> float | None:
    """Seconds of a duration written 90s, 10m, 2h or 600 (seconds); None when it is not one."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = str(text).strip().lower()
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        return None
    return value if value > 0 else None
