"""bertfit suggest: unique, diverse suggestions never already labelled, a CSV ready to label, bad pools refused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bertfit.cli.main import main
from bertfit.curate.suggest import margins, select
from bertfit.data.inspection import near_key
from conftest import tiny_flags, write_csv


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, ag_news_rows, tmp_path_factory) -> Path:
    """A tiny-model run trained on the first 120 AG News rows."""
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    root = tmp_path_factory.mktemp("suggest")
    config = load_config(None, [*tiny_flags(tiny_model_dir, root), "--name", "tiny",
                                "--data.train", str(write_csv(root / "train.csv", ag_news_rows[:120]))])
    return train(config).run_dir


def pool_file(path: Path, texts: list[str]) -> Path:
    return write_csv(path, [(t,) for t in texts], header=("text",))


def test_suggestions_are_unique_unlabelled_and_ready_to_label(tmp_path, tiny_run, ag_news_rows, capsys):
    training = [t for t, _ in ag_news_rows[:120]]
    copy = ag_news_rows[250][0]
    pool = [t for t, _ in ag_news_rows[100:260]] + [copy.upper(), f" {copy} ", copy]  # 20 labelled, 3 repeats
    out = tmp_path / "next.csv"
    assert main(["suggest", str(tiny_run), "--pool", str(pool_file(tmp_path / "pool.csv", pool)), "--n", "40",
                 "--out", str(out), "--quiet"]) == 0
    assert "40 texts to label" in capsys.readouterr().out
    with open(out, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["text", "label", "pool_row", "predicted", "margin"]
    assert len(rows) == 40 and all(r["label"] == "" for r in rows)
    keys = [near_key(r["text"]) for r in rows]
    assert len(set(keys)) == 40  # unique, repeats of a text included
    assert not set(keys) & {near_key(t) for t in training}  # never already labelled
    assert all(pool[int(r["pool_row"]) - 1].strip() == r["text"] for r in rows)
    # the labelled rows go back through an ordinary training run
    with open(out, newline="", encoding="utf-8") as file:
        assert next(csv.reader(file))[:2] == ["text", "label"]


def test_diversity_picks_one_of_each_group_of_near_copies():
    """Three groups of near-identical texts, all uncertain: uncertainty alone takes three copies of one group,
    uncertainty with diversity one text of each."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8)
    vectors = np.concatenate([centre + 0.01 * rng.standard_normal((10, 8)) for centre in centres])
    spread = np.concatenate([np.linspace(0.01, 0.05, 10), np.linspace(0.06, 0.10, 10), np.linspace(0.11, 0.15, 10)])
    probabilities = np.stack([(1 + spread) / 2, (1 - spread) / 2], axis=1)
    probabilities = np.concatenate([probabilities, np.tile([[0.99, 0.01]], (20, 1))])  # 20 confident rows
    vectors = np.concatenate([vectors, rng.standard_normal((20, 8))])
    assert np.allclose(margins(probabilities)[:30], spread)
    assert set(np.argsort(margins(probabilities))[:3] // 10) == {0}
    picked = select(probabilities, vectors, 3, candidates_per_pick=10)
    assert sorted(picked // 10) == [0, 1, 2] and picked[0] == 0  # the most uncertain first
    assert len(set(select(probabilities, vectors, 12, candidates_per_pick=2).tolist())) == 12


@pytest.mark.parametrize("content, args, message", [
    ("text,label\nsome news,World\nmore news,\n", [], "pool.csv: column 'label' holds labels in 1 rows"),
    ("text\n", [], "pool.csv: the pool is empty"),
    ("text\nsome news\n", ["--n", "0"], "--n: must be >= 1"),
    ("body\nsome news\n", [], "text column(s) text not found"),
    ("text\nsome news\n\"\"\n", [], "pool.csv row 2: empty text"),
])
def test_bad_pools_are_refused_with_one_line(tmp_path, tiny_run, content, args, message, capsys):
    (tmp_path / "pool.csv").write_text(content)
    assert main(["suggest", str(tiny_run), "--pool", str(tmp_path / "pool.csv"), "--out", str(tmp_path / "s.csv"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s.csv").exists()


def test_a_pool_of_training_texts_has_nothing_to_suggest(tmp_path, tiny_run, ag_news_rows, capsys):
    pool = pool_file(tmp_path / "pool.csv", [t for t, _ in ag_news_rows[:30]])
    assert main(["suggest", str(tiny_run), "--pool", str(pool), "--out", str(tmp_path / "s.csv")]) == 2
    assert "every pool text is already in the run's training data" in capsys.readouterr().err


def test_an_existing_out_file_is_kept_unless_overwrite(tmp_path, tiny_run, ag_news_rows, capsys):
    """suggestions.csv may hold labels filled in by hand: a second suggest refuses to replace it, naming the flag."""
    pool = pool_file(tmp_path / "pool.csv", [t for t, _ in ag_news_rows[200:260]])
    out = tmp_path / "s.csv"
    out.write_text("text,label\nlabelled by hand,World\n")
    assert main(["suggest", str(tiny_run), "--pool", str(pool), "--n", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} already exists" in err and "(--overwrite)" in err and err.count("\n") == 1
    assert out.read_text() == "text,label\nlabelled by hand,World\n"
    assert main(["suggest", str(tiny_run), "--pool", str(pool), "--n", "5", "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert len(out.read_text().splitlines()) == 6


def test_field_flags_read_a_pool_with_other_columns(tmp_path, tiny_run, tiny_model_dir, ag_news_rows, capsys):
    """A pool whose texts sit in `headline`: --data.text_columns reads it, the file to label names the column
    as the pool does, and the printed train command reads it with the same setting."""
    pool = write_csv(tmp_path / "pool.csv", [(t, "x") for t, _ in ag_news_rows[200:260]], header=("headline", "source"))
    out = tmp_path / "next.tsv"
    assert main(["suggest", str(tiny_run), "--pool", str(pool), "--n", "5", "--out", str(out),
                 "--data.text_columns", "[headline]", "--quiet"]) == 0
    printed = capsys.readouterr().out
    with open(out, newline="", encoding="utf-8") as file:
        assert next(csv.reader(file, delimiter="\t")) == ["headline", "label", "pool_row", "predicted", "margin"]
    [command] = [line.strip() for line in printed.splitlines() if line.strip().startswith("bertfit train")]
    assert f"--data.train {out}" in command and "--data.text_columns '[\"headline\"]'" in command
    assert f"--model.name {tiny_model_dir} --model.max_length 64" in command  # --init-from needs the run's encoder
