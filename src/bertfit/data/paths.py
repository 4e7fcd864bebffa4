"""The paths a run's config names (data files, runs, model folders): stored absolute, so a run reads the same
data from any working directory; preset, registry and hub names stay names.

Runs made before paths were stored absolute hold paths relative to the folder training ran in, which the
run does not record; each such path is looked for in the working directory, in the folder the run was
made in (when output_dir/name still match the run's place) and in the run folder itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bertfit.config import FILE_FORMATS, RunConfig, override
from bertfit.data.presets import PRESETS
from bertfit.registry.catalog import AUTO_ALIAS, CATALOG, EMBEDDED_ALIAS

log = logging.getLogger(__name__)

DATA_FIELDS = ("data.train", "data.validation", "data.test", "distill.unlabelled")  # a file, preset or hub dataset
RUN_FIELDS = ("model.init_from", "distill.teacher")  # always a run directory or model folder
PATH_FIELDS = (*DATA_FIELDS, *RUN_FIELDS, "model.name")  # model.name: a folder, or a registry or hub name


def field_value(config: RunConfig, dotted: str) -> str | None:
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def is_name(dotted: str, value: str) -> bool:
    """A preset (data) or registry (model.name) name: read as a name even where a folder of that name exists."""
    if dotted == "model.name":
        return value in CATALOG or value in (EMBEDDED_ALIAS, AUTO_ALIAS)
    return dotted in DATA_FIELDS and value in PRESETS


def absolute_paths(config: RunConfig, base: Path | None = None) -> RunConfig:
    """`config` with every relative path that exists (relative to `base`, default the working directory)
    made absolute; names and paths that exist nowhere are kept as written."""
    base = Path.cwd() if base is None else base
    changed = {}
    for dotted in PATH_FIELDS:
        value = field_value(config, dotted)
        if value is None or is_name(dotted, value) or Path(value).expanduser().is_absolute():
            continue
        path = base / Path(value).expanduser()
        if path.exists():
            changed[dotted] = os.path.abspath(path)
    return override(config, changed) if changed else config


def resolve_stored_paths(config: RunConfig, run_dir: Path) -> RunConfig:
    """A run's config with relative paths (runs of earlier versions) resolved where they are found; a path
    found nowhere is kept, with a warning naming its field (reading it then fails with that field's name)."""
    relative = {dotted: value for dotted in PATH_FIELDS if (value := field_value(config, dotted)) is not None
                and not is_name(dotted, value) and not Path(value).expanduser().is_absolute()}
    if not relative:
        return config
    bases = [Path.cwd(), *_made_in(config, run_dir), Path(run_dir)]
    resolved = config
    for base in bases:
        resolved = absolute_paths(resolved, base)
    for dotted, value in relative.items():
        if field_value(resolved, dotted) == value and _looks_like_path(dotted, value):
            where = ", ".join(dict.fromkeys(str(b.absolute()) for b in bases))
            log.warning("%s: %s in %s is a relative path from an earlier version, found in none of %s; pass the "
                        "file again (e.g. evaluate --data FILE) or write its absolute path there", dotted, value,
                        Path(run_dir) / "config.yaml", where)
    return resolved


def _made_in(config: RunConfig, run_dir: Path) -> list[Path]:
    """The folder training ran in, when the run still sits at output_dir/name relative to it."""
    tail = Path(config.output_dir) / (config.name or "")
    place = Path(os.path.abspath(run_dir))
    if tail.is_absolute() or place.parts[-len(tail.parts):] != tail.parts:
        return []
    return [Path(*place.parts[:-len(tail.parts)])]


def _looks_like_path(dotted: str, value: str) -> bool:
    """Whether a value that exists nowhere was meant as a path (else a hub name, left alone)."""
    if dotted in RUN_FIELDS:
        return True
    return dotted in DATA_FIELDS and (Path(value).suffix.lower() in FILE_FORMATS or value.startswith("."))
