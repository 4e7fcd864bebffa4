"""The review queues round-trip through Label Studio's and Argilla's formats: exported as their import formats,
their exports read back into the journal, and a label they do not know is one error naming the row."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import pytest
from review_run import copy_run, make_review_run

from bertfit.cli.main import main


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_model_dir, ag_news_rows):
    return make_review_run(tmp_path_factory.mktemp("review-formats"), tiny_model_dir, ag_news_rows)


@pytest.fixture
def review_run(base_run, tmp_path):
    return copy_run(base_run, tmp_path)


def annotated(task: dict, *choices: tuple[str, bool, str]) -> dict:
    """A task as Label Studio exports it: its annotations, each (choice, was_cancelled, created_at)."""
    return {**task, "id": 100 + len(choices), "annotations": [
        {"id": k, "was_cancelled": cancelled, "created_at": when, "lead_time": 2.5,
         "result": [{"id": "r1", "from_name": "label", "to_name": "text", "type": "choices", "origin": "manual",
                     "value": {"choices": [choice]}}]} for k, (choice, cancelled, when) in enumerate(choices)]}


def test_label_studio_round_trip(review_run, tmp_path, capsys):
    from bertfit.deploy.review_sources import open_review

    run, suggestions = review_run
    out = tmp_path / "tasks.json"
    assert main(["review", str(run), "--suggestions", str(suggestions), "--export", "labelstudio", str(out)]) == 0
    state = open_review(run)
    tasks = json.loads(out.read_text())
    assert len(tasks) == len(state.order["audit"]) + 5
    first = state.items[state.order["audit"][0]]
    assert tasks[0]["data"]["text"] == first["text"] and tasks[0]["data"]["bertfit_item"] == first["id"]
    assert tasks[0]["predictions"][0]["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                                     "value": {"choices": [first["given"]]}}]
    view = ElementTree.fromstring(out.with_suffix(".xml").read_text())
    choices = view.find("Choices")
    assert view.find("Text").get("name") == "text" and choices.get("toName") == "text"
    assert [c.get("value") for c in choices] == [*state.labels, "DROP"]
    label_task = next(t for t in tasks if t["data"]["bertfit_queue"] == "label")
    exported = [annotated(tasks[0], ("Sports", False, "2025-01-01T10:00:00Z"), ("DROP", False, "2025-01-01T11:00:00Z")),
                annotated(label_task, ("World", False, "2025-01-01T10:00:00Z"), ("Sports", True, "2025-01-02T10:00:00Z")),
                {**tasks[1], "id": 7, "annotations": []}]  # not annotated: left as it is
    (tmp_path / "export.json").write_text(json.dumps(exported))
    capsys.readouterr()
    assert main(["review", str(run), "--import", str(tmp_path / "export.json")]) == 0
    assert "2 decisions imported (0 already so)" in capsys.readouterr().out
    state = open_review(run)
    assert state.labelled("audit") == {first["id"]: "DROP"}  # the latest annotation
    assert state.labelled("label") == {label_task["data"]["bertfit_item"]: "World"}  # the cancelled one is ignored
    assert main(["review", str(run), "--import", str(tmp_path / "export.json")]) == 0
    assert "0 decisions imported (2 already so)" in capsys.readouterr().out


def test_argilla_round_trip(review_run, tmp_path, capsys):
    from bertfit.deploy.review_sources import open_review

    run, suggestions = review_run
    out = tmp_path / "argilla"
    assert main(["review", str(run), "--suggestions", str(suggestions), "--export", "argilla", str(out)]) == 0
    records = json.loads((out / "records.json").read_text())
    settings = json.loads((out / ".argilla" / "settings.json").read_text())
    state = open_review(run)
    [question] = settings["questions"]
    assert question["name"] == "label" and [o["value"] for o in question["settings"]["options"]] == [*state.labels, "DROP"]
    assert [f["name"] for f in settings["fields"]] == ["text", "note"]
    label_ids = state.order["label"]
    by_id = {r["id"]: r for r in records}
    assert by_id[label_ids[0]]["fields"]["text"] == state.items[label_ids[0]]["text"]
    assert by_id[label_ids[0]]["suggestions"]["label"]["value"] == state.items[label_ids[0]]["prefill"]
    users = ["0b5c5a43-8ad0-4d4b-9b8f-4f1c3f0a0001", "0b5c5a43-8ad0-4d4b-9b8f-4f1c3f0a0002"]
    by_id[label_ids[0]]["responses"] = {"label": [{"value": "Sports", "user_id": users[0]},
                                                  {"value": "Sports", "user_id": users[1]}]}
    by_id[label_ids[1]]["responses"] = {"label": [{"value": "World", "user_id": users[0], "status": "discarded"}]}
    (tmp_path / "records.json").write_text(json.dumps(records))
    assert main(["review", str(run), "--import", str(tmp_path / "records.json")]) == 0
    assert open_review(run).labelled("label") == {label_ids[0]: "Sports"}
    flat = [{"id": label_ids[2], "status": "completed", "text": "...", "label.responses": ["World", "Business", "World"],
             "label.responses.users": users + users[:1], "label.responses.status": ["submitted"] * 3}]
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    assert main(["review", str(run), "--import", str(tmp_path / "flat.json")]) == 0
    assert open_review(run).labelled("label") == {label_ids[0]: "Sports", label_ids[2]: "World"}


def test_an_unknown_label_is_one_error_naming_the_row_and_nothing_is_imported(review_run, tmp_path, capsys):
    run, suggestions = review_run
    out = tmp_path / "tasks.json"
    assert main(["review", str(run), "--suggestions", str(suggestions), "--export", "labelstudio", str(out)]) == 0
    tasks = json.loads(out.read_text())
    label_task = next(t for t in tasks if t["data"]["bertfit_queue"] == "label")
    exported = [annotated(tasks[0], ("World", False, "1")), annotated(label_task, ("DROP", False, "1"))]
    (tmp_path / "bad.json").write_text(json.dumps(exported))
    capsys.readouterr()
    assert main(["review", str(run), "--import", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.json task 2 (id 101): label 'DROP' is not one of Business, Sci/Tech, Sports, World" in err
    assert err.count("\n") == 1
    assert not (run / "review" / "decisions.jsonl").exists()  # the good first task was not imported either
    (tmp_path / "stranger.json").write_text(json.dumps([{"id": "someone-else", "responses": {}}]))
    assert main(["review", str(run), "--import", str(tmp_path / "stranger.json")]) == 2
    assert "item 'someone-else' is not in this run's review" in capsys.readouterr().err
