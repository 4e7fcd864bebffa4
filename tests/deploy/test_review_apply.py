"""`bertfit review RUN --apply`: the next run trains on the run's own data with the audit decisions applied and
the labelled texts added, and is compared with the run on the same test rows."""

from __future__ import annotations

import json

import pytest
import yaml
from review_run import copy_run, make_review_run

from bertfit.cli.main import main
from conftest import read_csv


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_model_dir, ag_news_rows):
    return make_review_run(tmp_path_factory.mktemp("review-apply"), tiny_model_dir, ag_news_rows)


def test_apply_trains_on_the_reviewed_data_and_compares_on_the_same_test_rows(base_run, tmp_path, capsys):
    from bertfit.curate.relabel import DROP
    from bertfit.deploy.review_sources import open_review
    from bertfit.deploy.review_state import DROP as REVIEW_DROP

    assert REVIEW_DROP == DROP  # the page's drop is the one --relabel reads
    run, suggestions = copy_run(base_run, tmp_path)
    original = read_csv(base_run[0].parents[1] / "train.csv")
    state = open_review(run, suggestions)
    fixed, dropped, kept = (state.items[i] for i in state.order["audit"][:3])
    other = next(label for label in state.labels if label != fixed["given"])
    state.decide("audit", fixed["id"], other)
    state.decide("audit", dropped["id"], DROP)
    state.decide("audit", kept["id"], kept["given"])
    new = [state.items[i] for i in state.order["label"]]
    state.decide("label", new[0]["id"], "Sports")
    state.decide("label", new[1]["id"], None)  # skipped: not added
    state.decide("label", new[2]["id"], "World")
    capsys.readouterr()
    assert main(["review", str(run), "--apply", "--name", "next", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "audit: 1 rows relabelled, 1 dropped, 1 kept as given; label: 2 new rows" in out
    test_file = str(base_run[0].parents[1] / "test.csv")
    assert f"test ({test_file}), the same rows for both runs:" in out and "  news: accuracy" in out
    assert "  next: accuracy" in out and "change: accuracy" in out
    trained = read_csv(run / "review" / "next" / "train_relabelled.csv")
    expected = [(r["text"], other if i + 1 == fixed["row"] else r["label"]) for i, r in enumerate(original)
                if i + 1 != dropped["row"]]
    assert [(r["text"], r["label"]) for r in trained] == expected + [(new[0]["text"], "Sports"), (new[2]["text"], "World")]
    assert [(c["row"], c["new_label"]) for c in read_csv(run / "review" / "next" / "changes.csv")] == \
        sorted([(str(fixed["row"]), other), (str(dropped["row"]), DROP)], key=lambda c: int(c[0]))
    assert len(read_csv(run / "review" / "next" / "added.csv")) == 2
    next_run = run.parent / "next"
    results = json.loads((next_run / "results.json").read_text())
    assert results["rows"]["train"] + results["rows"]["validation"] == len(original) - 1 + 2
    assert yaml.safe_load((next_run / "config.yaml").read_text())["data"]["test"] == test_file
    capsys.readouterr()
    assert main(["review", str(run), "--apply", "--name", "next"]) == 2  # taken: refused before any file is written
    assert "next" in capsys.readouterr().err


def test_apply_with_nothing_reviewed_is_refused(base_run, tmp_path, capsys):
    run, suggestions = copy_run(base_run, tmp_path)
    assert main(["review", str(run), "--suggestions", str(suggestions), "--apply"]) == 2
    assert "nothing reviewed yet" in capsys.readouterr().err
    assert not (run.parent / "news-reviewed").exists()
