"""Atomic writes: a file or folder is built beside its final place and renamed into it.

A crash leaves either the old copy or the new one, never half of one. Everything bertfit writes to
disk (run directories, token and feature caches, exports) goes through these helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from bertfit.errors import BertfitError

# The marker bertfit leaves in a run directory and in a folder `bertfit merge` wrote: only a marked folder is
# taken for bertfit's own (to replace, or to confine writes to), since file names alone prove nothing.
RUN_MARKER, MODEL_MARKER = ".bertfit-run", ".bertfit-model"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """An open temporary file beside `path`; on success it replaces `path` (text modes write UTF-8)."""
    path = check_confined(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}  # newline "": csv writes its own line ends
    tmp = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", delete=False, **text)
    try:
        with tmp:
            yield tmp
        os.chmod(tmp.name, 0o666 & ~_umask())  # temp files are private by default; results are not
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as file:
        file.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `final` in two renames.

    keep_existing: when `final` already exists at the end (another process wrote the same cache key
    first; its copy is identical), keep it and drop the staging folder instead.
    """
    final = check_confined(Path(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _follow_umask(staging)
    if keep_existing:
        try:
            os.rename(staging, final)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _follow_umask(folder: Path) -> None:
    """Give every file in `folder` the umask's permissions: some writers (safetensors) make theirs private."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def recover_stale(final: Path) -> None:
    """Tidy what a crash inside atomic_dir(final) left: put `final` back from its .old copy when the crash
    came between the two renames, and remove staging folders. Only for folders one process writes."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists():
        os.rename(old, final)
    for stale in [old, *final.parent.glob(f".{final.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def marked_root(path: Path) -> Path | None:
    """The nearest folder above `path` (as written, links not resolved) that carries a bertfit marker, else None."""
    for folder in Path(os.path.abspath(path)).parents:
        if any((folder / marker).is_file() for marker in (RUN_MARKER, MODEL_MARKER)):
            return folder
    return None


def check_confined(path: Path) -> Path:
    """Refuse a write into a bertfit folder through a symbolic link (model/, eval/, export/, ... pointing elsewhere):
    a command writes inside its own run, never into whatever folder a link inside it leads to."""
    root = marked_root(path)
    if root is None:
        return path
    target = Path(os.path.abspath(path))
    current = root
    for part in target.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise BertfitError(f"{current} is a symbolic link inside {root}; bertfit writes only inside its own "
                               "folder, so replace the link with a real folder (or remove it) and run again")
    return path


def check_replaceable(out: Path, keep: tuple[Path, ...] = ()) -> Path:
    """Refuse, before any work, an output folder whose replacement would lose something: the current directory or
    a folder above it, a source in `keep` or a folder holding one, a link, a file, or a non-empty folder without
    MODEL_MARKER (a folder bertfit did not write)."""
    out = Path(out)
    resolved = out.resolve()
    for protected in (Path.cwd(), *keep):
        protected = Path(protected).resolve()
        if resolved == protected or resolved in protected.parents:
            raise BertfitError(f"{out}: would replace {protected} (the current directory or the source); "
                               "name a new folder to write to")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BertfitError(f"{out} exists and is not a folder bertfit wrote; name a new folder to write to")
    if out.is_dir() and any(out.iterdir()) and not (out / MODEL_MARKER).is_file():
        raise BertfitError(f"{out} is a folder bertfit did not write (no {MODEL_MARKER}), so it will not be replaced; "
                           "name a new folder, or remove it yourself")
    return out
