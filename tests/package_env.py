"""A virtual environment's dependencies drawn from this one, with chosen extras left out: the distributions only
those extras need are hidden, so an import that needs them fails as it would where they were never installed."""

from __future__ import annotations

import importlib.metadata as metadata
import sysconfig
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OWN = ("bertfit", "__editable__", "_bertfit")


def declared() -> tuple[list[str], dict[str, list[str]]]:
    """pyproject.toml's dependencies and optional dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements pull in, by normalised name (bertfit's own extras expanded)."""
    core, extras = declared()
    seen: set[str] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = requirement.name.lower().replace("_", "-")
        if name == "bertfit":
            pending += [Requirement(text) for extra in requirement.extras for text in extras[extra]]
            continue
        if name in seen:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in distribution.requires or []:
            child = Requirement(text)
            environments = [{"extra": extra} for extra in ("", *requirement.extras)]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append(child)
    return seen


def entries(names: set[str]) -> set[str]:
    """The top-level site-packages entries (packages, modules, .dist-info folders) of these distributions."""
    found: set[str] = set()
    for name in names:
        for file in metadata.distribution(name).files or []:
            top = file.parts[0]
            if top not in ("..", "bin") and not top.endswith(".pth"):
                found.add(top)
    return found


def dependency_folder(folder: Path, extras: tuple[str, ...]) -> Path:
    """`folder` filled with links to this environment's site-packages entries that the core dependencies and
    `extras` need or that no extra needs; the entries only other extras need are left out."""
    core, declared_extras = declared()
    wanted = closure(core + [text for extra in extras for text in declared_extras[extra]])
    everything = closure(core + [text for texts in declared_extras.values() for text in texts])
    hidden = entries(everything - wanted) - entries(wanted)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name not in hidden and not entry.name.lower().startswith(OWN) and not entry.name.endswith(".pth"):
            (folder / entry.name).symlink_to(entry)
    return folder
