"""train.report_to: the same scalars and config reach MLflow's store and W&B's offline run files; train.max_steps."""

from __future__ import annotations

import json
import struct

import pytest

from bertfit.artifacts import read_metrics, read_results
from bertfit.config import load_config
from bertfit.errors import BertfitError
from bertfit.training.recipe import train
from conftest import write_csv
from interrupts import stop_at

WANDB_HEADER = 7  # ":W&B", a 2-byte magic, a version byte
WANDB_BLOCK = 32 * 1024  # records sit in 32 KiB blocks, each record split into chunks with a 7-byte header


def wandb_records(path) -> list:
    """Every record of a W&B run file (.wandb: LevelDB-log framing of wandb_internal_pb2.Record messages)."""
    from wandb.proto import wandb_internal_pb2

    data, records, position, pending = path.read_bytes(), [], WANDB_HEADER, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        room = WANDB_BLOCK - position % WANDB_BLOCK
        if room < 7:  # a block's tail too short for a chunk header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 0:
            break
    return records


def wandb_history(run_file) -> tuple[dict[int, dict[str, float]], dict[str, object]]:
    """Scalars by step, and the config, as written to a W&B offline run."""
    history, config = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(items.pop("_step"), {}).update({k: v for k, v in items.items() if not k.startswith("_")})
        elif kind in ("run", "config"):
            update = record.run.config.update if kind == "run" else record.config.update
            config |= {item.key: json.loads(item.value_json) for item in update}
    return history, config


def tracked_run(name: str, tiny_overrides, tmp_path, ag_news_rows, monkeypatch):
    """The config of a 4-step run that reports to MLflow (a file store under tmp_path) and W&B (offline), and
    MLflow's tracking URI."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # A given tracking URI; MLflow's file store, unlike the default SQLite one, needs no tables created first.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    write_csv(tmp_path / "train.csv", ag_news_rows[:120])
    config = load_config(None, [*tiny_overrides, "--data.train", str(tmp_path / "train.csv"), "--name", name,
                                "--train.report_to", "mlflow,wandb", "--train.eval_every_steps", "2",
                                "--train.max_steps", "4", "--train.mlflow_uri", uri])
    return config, uri


def test_mlflow_and_wandb_receive_the_same_scalars_and_config(tiny_overrides, tmp_path, ag_news_rows, monkeypatch):
    config, uri = tracked_run("tracked", tiny_overrides, tmp_path, ag_news_rows, monkeypatch)
    from mlflow.tracking import MlflowClient

    run_dir = train(config).run_dir
    evaluations = {r["step"]: r for r in read_metrics(run_dir)}
    assert sorted(evaluations) == [2, 4]

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("bertfit").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert float(run.data.params["train.lr"]) == 1e-3 and run.data.params["train.max_steps"] == "4"
    mlflow_f1 = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/f1_macro")}
    assert mlflow_f1 == pytest.approx({step: r["eval/f1_macro"] for step, r in evaluations.items()})
    assert "train/loss" in run.data.metrics and "train/lr" in run.data.metrics

    [run_file] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history, wandb_config = wandb_history(run_file)
    assert {step: h["eval/f1_macro"] for step, h in history.items() if "eval/f1_macro" in h} == pytest.approx(mlflow_f1)
    assert set(run.data.metrics) <= {key for h in history.values() for key in h}  # the same scalar names
    assert wandb_config["train.lr"] == 1e-3 and wandb_config["model.max_length"] == 64
    assert not (run_dir / "tensorboard").exists()  # report_to replaced the default


def test_missing_tracker_package_says_what_to_install(tiny_overrides, tmp_path, ag_news_rows, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError("no wandb", name="wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    write_csv(tmp_path / "train.csv", ag_news_rows[:40])
    config = load_config(None, [*tiny_overrides, "--data.train", str(tmp_path / "train.csv"), "--train.report_to", "wandb"])
    with pytest.raises(BertfitError, match=r"train.report_to: wandb .*bertfit\[track\]"):
        train(config)


def test_max_steps_stops_a_probe_run_where_its_schedule_ends(tiny_overrides, tmp_path, ag_news_rows):
    write_csv(tmp_path / "train.csv", ag_news_rows[:120])  # 7 steps an epoch at batch 16 (108 rows after validation)
    config = load_config(None, [*tiny_overrides, "--data.train", str(tmp_path / "train.csv"), "--train.epochs", "3",
                                "--train.max_steps", "3", "--train.warmup_ratio", "0"])
    result = train(config)
    assert result.steps == 3 and read_results(result.run_dir)["steps"] == 3
    assert [r["step"] for r in read_metrics(result.run_dir)] == [3]  # evaluated once, at the end


def test_mlflow_store_defaults_to_one_sqlite_file_beside_the_runs(tmp_path):
    from bertfit.training.trackers import default_mlflow_uri

    assert default_mlflow_uri(tmp_path / "runs" / "a") == default_mlflow_uri(tmp_path / "runs" / "b") == \
        f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"


def test_a_resumed_run_goes_on_in_the_same_mlflow_and_wandb_runs(tiny_overrides, tmp_path, ag_news_rows, monkeypatch):
    config, uri = tracked_run("resumed", tiny_overrides, tmp_path, ag_news_rows, monkeypatch)
    from mlflow.tracking import MlflowClient

    with monkeypatch.context() as patch:
        stop_at(patch, 2)
        stopped = train(config)
    assert stopped.interrupted
    ids = json.loads((stopped.run_dir / "trackers.json").read_text())
    train(resume=stopped.run_dir)

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("bertfit").experiment_id])
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval/f1_macro")) == [2, 4]
    run_files = sorted((stopped.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2 and all(f.name == f"run-{ids['wandb']}.wandb" for f in run_files)


def test_an_mlflow_run_that_cannot_be_reopened_gives_way_to_a_new_one(tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow")
    from bertfit.training.trackers import open_trackers

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = tmp_path / "runs" / "gone"
    run_dir.mkdir(parents=True)
    (run_dir / "trackers.json").write_text('{"mlflow": "0123456789abcdef"}')  # a run this store never held
    with caplog.at_level("WARNING", logger="bertfit.training.trackers"):
        [tracker] = open_trackers(("mlflow",), run_dir, {"train.lr": 0.1}, purge_step=4,
                                  mlflow_uri=f"file:{tmp_path / 'mlruns'}")
    tracker.close()
    assert tracker.run_id != "0123456789abcdef" and "could not be reopened" in caplog.text
    assert json.loads((run_dir / "trackers.json").read_text()) == {"mlflow": tracker.run_id}
