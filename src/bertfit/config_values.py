"""Turning YAML files and command-line flags into plain values, and values into the types config fields declare."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from bertfit.errors import BertfitError, ConfigError


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
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(coerce(item, args[0]).strip() for item in items)
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
            raise ConfigError([f"unexpected argument {arg!r}: overrides look like --train.lr 3e-5"])
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError([f"{key}: missing value (write --{key} VALUE)"])
            i += 1
            value = args[i]
        pairs.append((key, _flag_value(value)))
        i += 1
    return pairs


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
