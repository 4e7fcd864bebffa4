"""`bertfit merge`: a standalone model folder with LoRA adapters merged into the encoder, written only where
nothing is lost (a new or empty folder, or one an earlier merge wrote)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bertfit import __version__, artifacts
from bertfit.atomic import MODEL_MARKER, check_replaceable, recover_stale


def save_merged(path: Path, out: Path) -> Path:
    """Write a standalone copy of a (LoRA) model folder with the adapters merged into the encoder; the source, the
    current directory and folders bertfit did not write are refused before any work."""
    from bertfit.model import merge_lora

    out = check_replaceable(Path(out), keep=(Path(path), artifacts.model_folder(path)))
    recover_stale(out)  # staging folders an interrupted merge left
    loaded = artifacts.load_model(path)
    meta = dataclasses.replace(loaded.meta, adapter=None, lora=None, bertfit_version=__version__, merged_from=str(path))
    artifacts.save_model(out, merge_lora(loaded.model), loaded.tokenizer, meta, marker=MODEL_MARKER)
    return out
