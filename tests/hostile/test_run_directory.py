"""Run names and --overwrite never reach outside output_dir; resuming never runs code from the run directory."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from bertfit import artifacts
from bertfit.atomic import atomic_dir, recover_stale
from bertfit.cli.main import main
from bertfit.config import RunConfig, load_config
from bertfit.errors import BertfitError, ConfigError
from bertfit.runtime import seed
from bertfit.training.checkpoint import STATE_FILE, STATE_TENSORS, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", [".", "..", "...", "../escaped", "/etc", "a/b", "a\\b", ""])
def test_run_names_are_one_folder_name(name):
    with pytest.raises(ConfigError, match="name: must be one folder name"):
        load_config(None, ["--name", name]) if name != "" else load_config(None, ["--name", "''"])


def test_cli_train_name_dot_overwrite_deletes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "other-run").mkdir(parents=True)
    (runs / "other-run" / "results.json").write_text("{}")
    code = main(["train", "--name", ".", "--overwrite", "--output_dir", str(runs)])
    assert code == 2 and "name: must be one folder name" in capsys.readouterr().err
    assert (runs / "other-run" / "results.json").is_file()


def test_overwrite_only_removes_a_bertfit_run(tmp_path):
    victim = tmp_path / "runs" / "photos"
    victim.mkdir(parents=True)
    (victim / "holiday.jpg").write_bytes(b"\xff\xd8")
    config = RunConfig(name="photos", output_dir=str(tmp_path / "runs"))
    with pytest.raises(BertfitError, match=r"not a bertfit run directory \(no \.bertfit-run\)"):
        artifacts.check_run_dir_free(config, overwrite=True)
    assert (victim / "holiday.jpg").is_file()

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BertfitError, match="is not a run directory"):
        artifacts.check_run_dir_free(RunConfig(name="link", output_dir=str(tmp_path / "runs")), overwrite=True)


def test_overwrite_takes_no_file_names_for_a_run(tmp_path):
    """A folder that holds a run's file names (config.yaml, labels.json, env.json) but no marker is a user's folder."""
    folder = tmp_path / "runs" / "notes"
    folder.mkdir(parents=True)
    for name in ("config.yaml", "labels.json", "env.json", "precious.txt"):
        (folder / name).write_text("mine")
    with pytest.raises(BertfitError, match=r"not a bertfit run directory"):
        artifacts.check_run_dir_free(RunConfig(name="notes", output_dir=str(tmp_path / "runs")), overwrite=True)
    assert (folder / "precious.txt").read_text() == "mine"


def test_api_config_built_by_hand_is_checked_too(tmp_path):
    with pytest.raises(BertfitError, match="name: must be one folder name"):
        artifacts.check_run_dir_free(RunConfig(name="..", output_dir=str(tmp_path)), overwrite=True)


def test_a_run_carries_its_marker_and_can_be_overwritten(tiny_run_marker_dir):
    assert (tiny_run_marker_dir / artifacts.RUN_MARKER).is_file() and artifacts.is_run_dir(tiny_run_marker_dir)


@pytest.fixture
def tiny_run_marker_dir(tmp_path):
    from bertfit.data.labels import LabelMap

    config = RunConfig(name="fresh", output_dir=str(tmp_path))
    first = artifacts.create_run_dir(config, LabelMap(("a", "b")), {}, overwrite=False)
    (first / "stale.txt").write_text("old")
    again = artifacts.create_run_dir(config, LabelMap(("a", "b")), {}, overwrite=True)
    assert not (again / "stale.txt").exists()
    return again


def _checkpoint(tmp_path: Path) -> torch.optim.Optimizer:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, model, {"optimizer": optimizer.state_dict(), "loop": {"step": 1, "best_score": None},
                                      "rng": seed.rng_state(), "rng_ranks": [seed.rng_state()]})
    return optimizer


def test_checkpoint_state_is_safetensors_plus_a_weights_only_file(tmp_path):
    optimizer = _checkpoint(tmp_path)
    folder = tmp_path / artifacts.CHECKPOINT_DIR
    torch.load(folder / STATE_FILE, weights_only=True)  # raises if anything but plain data were pickled
    saved = load_checkpoint(tmp_path, torch.nn.Linear(3, 2))
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(saved["optimizer"]["state"][0][key], optimizer.state_dict()["state"][0][key])
    draws = []
    for _ in range(2):  # every generator (python, numpy, torch) restarts where it was saved
        seed.set_rng_state(saved["rng"])
        draws.append((random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()))
    assert draws[0] == draws[1]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_pickle_is_never_executed(tmp_path, capsys):
    _checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    folder = tmp_path / artifacts.CHECKPOINT_DIR
    (folder / STATE_FILE).write_bytes(pickle.dumps({"loop": _Payload(marker)}))
    with pytest.raises(BertfitError, match="damaged checkpoint"):
        load_checkpoint(tmp_path, torch.nn.Linear(3, 2))
    (folder / STATE_FILE).unlink()
    torch.save({"loop": _Payload(marker)}, folder / "training.pt")  # the old format's file name
    with pytest.raises(BertfitError, match="older bertfit"):
        load_checkpoint(tmp_path, torch.nn.Linear(3, 2))
    assert not marker.exists()


@pytest.mark.parametrize("file", [STATE_FILE, STATE_TENSORS, artifacts.WEIGHTS_FILE])
def test_a_truncated_checkpoint_file_is_one_clear_line(tmp_path, file):
    _checkpoint(tmp_path)
    path = tmp_path / artifacts.CHECKPOINT_DIR / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BertfitError, match="damaged.*--overwrite"):
        load_checkpoint(tmp_path, torch.nn.Linear(3, 2))


def test_stale_staging_folders_are_cleaned_and_a_half_swap_is_undone(tmp_path):
    model = tmp_path / "model"
    (tmp_path / ".model.tmp-abc").mkdir()
    (tmp_path / ".model.tmp-abc" / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / ".model.old").mkdir()
    (tmp_path / ".model.old" / "bertfit.json").write_text("{}")
    recover_stale(model)  # a crash between atomic_dir's two renames: model/ is gone, its old copy remains
    assert (model / "bertfit.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_files_in_atomic_folders_follow_the_umask(tmp_path):
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as staging:
            save_file({"w": torch.zeros(2)}, staging / "model.safetensors")  # safetensors writes mode 0600
    finally:
        os.umask(old)
    assert (tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644
