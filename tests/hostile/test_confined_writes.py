# ruff: noqa: F811  (pytest fixtures imported from hostile_support are redefined as test arguments)
"""Every write stays inside the command's own run or a folder bertfit wrote: merge never replaces a user's folder,
the run itself or the working directory, links inside a run never lead a write out, and staging folders a killed
command left are cleaned by the next one."""

from __future__ import annotations

import os
import shutil

import pytest
from hostile_support import run_copy, tiny_run  # noqa: F401  (fixtures)

from bertfit.atomic import MODEL_MARKER, write_json_atomic, write_text_atomic
from bertfit.cli.main import main
from bertfit.errors import BertfitError


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_merge_never_replaces_a_folder_bertfit_did_not_write(tiny_run, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("mine")
    assert main(["merge", str(tiny_run), str(folder)]) == 2
    assert "bertfit did not write" in capsys.readouterr().err and (folder / "precious.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert main(["merge", str(tiny_run), str(tmp_path / "file")]) == 2
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("target", ["run", "model", "parent"])
def test_merge_never_replaces_its_own_source(run_copy, capsys, target):
    before = _listing(run_copy)
    out = {"run": run_copy, "model": run_copy / "model", "parent": run_copy.parent}[target]
    assert main(["merge", str(run_copy), str(out)]) == 2
    assert "would replace" in capsys.readouterr().err and _listing(run_copy) == before


def test_merge_into_the_working_directory_is_one_line_and_leaves_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["merge", str(tiny_run), "."]) == 2
    assert "current directory" in capsys.readouterr().err and list(work.iterdir()) == []


def test_merge_writes_a_marked_folder_it_may_replace_again(tiny_run, tmp_path):
    out = tmp_path / "merged"
    assert main(["merge", str(tiny_run), str(out)]) == 0
    assert (out / MODEL_MARKER).is_file() and (out / "bertfit.json").is_file()
    (tmp_path / ".merged.tmp-killed").mkdir()  # a merge killed half way
    assert main(["merge", str(tiny_run), str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_export_cleans_the_staging_folders_a_killed_export_left(run_copy):
    from bertfit.deploy.export import export_run

    stale = run_copy / ".export.tmp-killed"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"\0" * 1000)
    export_run(run_copy, int8=False, max_rows=16)
    assert not stale.exists() and (run_copy / "export" / "export.json").is_file()


@pytest.mark.parametrize("link", ["model", "eval", "audit", "export", "model/stack"])
def test_a_link_inside_a_run_never_leads_a_write_out(run_copy, tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    source = run_copy / link
    if source.exists():
        shutil.copytree(source, outside, dirs_exist_ok=True)
        shutil.rmtree(source)
    source.parent.mkdir(parents=True, exist_ok=True)
    source.symlink_to(outside)
    before = _listing(outside)
    with pytest.raises(BertfitError, match=f"{link} is a symbolic link inside"):
        write_json_atomic(run_copy / link / "x.json", {})
    with pytest.raises(BertfitError, match="symbolic link"):
        write_text_atomic(run_copy / link / "deeper" / "x.txt", "x")
    assert _listing(outside) == before


def test_a_linked_file_in_a_run_is_not_replaced_through(run_copy, tmp_path):
    outside = tmp_path / "tfidf.npz"
    outside.write_bytes(b"theirs")
    (run_copy / "model" / "stack").mkdir(exist_ok=True)
    (run_copy / "model" / "stack" / "tfidf.npz").symlink_to(outside)
    with pytest.raises(BertfitError, match="tfidf.npz is a symbolic link"):
        write_text_atomic(run_copy / "model" / "stack" / "tfidf.npz", "ours")
    assert outside.read_bytes() == b"theirs"


def test_evaluate_through_a_linked_eval_folder_writes_nothing_outside(run_copy, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_copy / "eval").symlink_to(outside)
    meta = (run_copy / "model" / "bertfit.json").read_text()
    assert main(["evaluate", str(run_copy), "--split", "train", "--max-rows", "16"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert list(outside.iterdir()) == [] and (run_copy / "model" / "bertfit.json").read_text() == meta


def test_evaluate_through_a_linked_model_folder_changes_nothing_outside(run_copy, tmp_path, capsys):
    outside = tmp_path / "model"
    shutil.move(run_copy / "model", outside)
    (run_copy / "model").symlink_to(outside)
    before = {p.name: p.read_bytes() for p in outside.iterdir() if p.is_file()}
    main(["evaluate", str(run_copy), "--split", "train", "--max-rows", "16", "--calibrate"])
    assert {p.name: p.read_bytes() for p in outside.iterdir() if p.is_file()} == before


def test_links_outside_any_bertfit_folder_are_the_user_s_business(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    write_text_atomic(tmp_path / "link" / "out.txt", "fine")  # e.g. a home folder that is a link
    assert (tmp_path / "real" / "out.txt").read_text() == "fine"
    assert os.path.islink(tmp_path / "link")
