"""Distributed data-parallel training on CPU (gloo): torchrun and accelerate with 2 processes, a 2-node rendezvous.

With dropout off, 2 ranks that each take half of every global batch must reach the same weights as
one process taking the whole batch (the gradient is the same sum, reduced in a different order).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from bertfit.artifacts import read_metrics
from bertfit.runtime import distributed, seed
from bertfit.runtime.distributed import Distributed, distributed_from_env, shard_rows
from bertfit.training.checkpoint import load_checkpoint, save_checkpoint
from launch import ACCELERATE, TORCHRUN, _assert_same_run, _env, _free_port, _run, _single


@pytest.fixture
def flags(no_dropout_model_dir, tiny_overrides, ag_news_csv) -> list[str]:
    # 64 rows in batches of 7: the last global batch has 1 row, so one rank gets an empty share.
    return tiny_overrides + ["--model.name", str(no_dropout_model_dir), "--model.dropout", "0",
                             "--data.train", str(ag_news_csv), "--data.max_train_rows", "64",
                             "--data.max_eval_rows", "24", "--train.batch_size", "7", "--train.eval_every_steps", "5",
                             "--train.keep_checkpoint", "true",  # compared after the runs finish, and resumed
                             "--train.precision", "fp32"]  # the tolerances are fp32's (auto is bf16 on a CPU with AMX)


def test_shards_cover_each_batch_once():
    rows = np.arange(7)
    shards = [shard_rows(rows, Distributed(rank, 3)) for rank in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == rows.tolist()
    assert distributed_from_env().world_size >= 1


def _two_nodes(args: list[str]) -> None:
    """Two torchrun launchers, one per "node", meeting at a rendezvous on 127.0.0.1."""
    port = str(_free_port())
    nodes = [subprocess.Popen([str(TORCHRUN), "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                               "--master-addr", "127.0.0.1", "--master-port", port, "-m", "bertfit.cli", "train", *args],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]


def test_torchrun_and_two_nodes_match_one_process_and_resume(flags):
    from bertfit.training.recipe import train

    single = _single(flags, "single")
    _run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "bertfit.cli", "train", *flags, "--name", "ddp"])
    parallel = single.parent / "ddp"
    _assert_same_run(single, parallel)
    assert (parallel / "results.json").is_file() and (parallel / "model" / "bertfit.json").is_file()

    # Resume both finished runs for a second epoch, the parallel one on a 2-node rendezvous: still equal.
    for run in (single, parallel):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["train"]["epochs"] = 2
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    train(resume=single)
    _two_nodes(["--resume", str(parallel)])
    _assert_same_run(single, parallel)
    assert read_metrics(parallel)[-1]["epoch"] == 2


def test_accelerate_launch_matches_one_process(flags, tmp_path):
    """`accelerate launch --multi_gpu` on a machine without GPUs: its torchrun starts 2 gloo processes."""
    single = _single(flags, "single")
    port = str(_free_port())
    # A private HF_HOME: a default accelerate config on the machine would otherwise override the flags.
    _run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
          "-m", "bertfit.cli", "train", *flags, "--name", "accelerate"], {"HF_HOME": str(tmp_path / "hf")})
    _assert_same_run(single, single.parent / "accelerate")


# torchrun runs this instead of `-m bertfit.cli`: rank 1 alone sends itself Ctrl-C during step STOP (of the
# loop, or with MODULE contrastive and FUNCTION group_loss of the contrastive stage). The ranks agree on
# stopping after each step, so both stop after that step (one stopping alone would hang the other in its
# next collective).
_INTERRUPTING_CLI = """
import os, signal, sys
from bertfit.training import MODULE
from bertfit.cli.main import main
real_step, done = MODULE.FUNCTION, []
def patched(*args, **kwargs):
    loss = real_step(*args, **kwargs)
    done.append(1)
    if len(done) == STOP and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGINT)
    return loss
MODULE.FUNCTION = patched
sys.exit(main(sys.argv[1:]))
"""


def _interrupting_cli(folder: Path, stop: int, module: str = "loop", function: str = "train_step") -> Path:
    driver = folder / f"interrupting_{module}.py"
    driver.write_text(_INTERRUPTING_CLI.replace("STOP", str(stop)).replace("MODULE", module).replace("FUNCTION", function))
    return driver


def test_two_process_resume_with_dropout_is_exact(tiny_model_dir, tiny_overrides, ag_news_csv, tmp_path):
    """Dropout on: each rank's own RNG state comes back from the checkpoint, so masks repeat exactly."""
    flags = tiny_overrides + ["--model.name", str(tiny_model_dir), "--data.train", str(ag_news_csv),
                              "--data.max_train_rows", "60", "--data.max_eval_rows", "16", "--train.batch_size", "8",
                              "--train.eval_every_steps", "3",  # 48 train rows, 6 steps; evaluations, checkpoints at 3, 6
                              "--train.keep_checkpoint", "true", "--train.precision", "fp32"]  # one choice for both launches
    torchrun = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2"]
    _run(torchrun + ["-m", "bertfit.cli", "train", *flags, "--name", "straight"])
    driver = _interrupting_cli(tmp_path, 4)
    stopped = subprocess.run(torchrun + [str(driver), "train", *flags, "--name", "stopped"], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert "interrupted after step 4" in stopped.stdout, stopped.stderr[-3000:]
    runs = tmp_path / "runs"
    _run(torchrun + ["-m", "bertfit.cli", "train", "--resume", str(runs / "stopped")])

    straight, resumed = (load_file(runs / name / "checkpoint" / "model.safetensors") for name in ("straight", "stopped"))
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert [r["step"] for r in read_metrics(runs / "stopped")] == [3, 6]
    assert read_metrics(runs / "stopped")[-1]["eval/loss"] == pytest.approx(read_metrics(runs / "straight")[-1]["eval/loss"])


def test_two_process_contrastive_stage_stops_together_and_resumes_exactly(tiny_model_dir, tiny_overrides, ag_news_csv,
                                                                         tmp_path):
    """Ctrl-C on rank 1 alone in the contrastive encoder stage: both ranks stop after that step with a checkpoint,
    and the resumed run ends with the weights of the one that never stopped."""
    flags = [*tiny_overrides, "--model.name", str(tiny_model_dir), "--data.train", str(ag_news_csv),
             "--data.max_train_rows", "48", "--data.max_eval_rows", "16", "--train.method", "contrastive",
             "--train.contrastive_steps", "30", "--train.checkpoint_every_steps", "10", "--train.keep_checkpoint", "true",
             "--train.precision", "fp32"]  # the straight and the stopped launch would each measure the CPU for auto
    torchrun = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2"]
    _run(torchrun + ["-m", "bertfit.cli", "train", *flags, "--name", "straight"])
    driver = _interrupting_cli(tmp_path, 15, "contrastive", "group_loss")
    stopped = subprocess.run(torchrun + [str(driver), "train", *flags, "--name", "stopped"], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert "interrupted in the contrastive encoder stage" in stopped.stdout, stopped.stderr[-3000:]
    assert "stopped at step 15 of 30 with a checkpoint" in stopped.stderr
    runs = tmp_path / "runs"
    _run(torchrun + ["-m", "bertfit.cli", "train", "--resume", str(runs / "stopped")])
    straight, resumed = (load_file(runs / name / "checkpoint" / "model.safetensors") for name in ("straight", "stopped"))
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)


_LAUNCHER_VARIABLES = [name for names in distributed._RANK_VARIABLES.values() for name in names] + \
    ["ACCELERATE_USE_CPU", "MASTER_ADDR"]


@pytest.mark.parametrize("variables, expected", [
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Distributed(3, 4, 1)),  # torchrun, accelerate --multi_gpu
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, Distributed(1, 2, 1)),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0"}, Distributed(1, 2, 0)),  # Intel MPI, MPICH
    ({"RANK": "0", "WORLD_SIZE": "2", "PMI_RANK": "1", "PMI_SIZE": "2"}, Distributed(0, 2, 0)),  # RANK wins
])
def test_rank_read_from_torchrun_and_mpirun_variables(monkeypatch, variables, expected):
    for name in _LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert distributed_from_env() == expected


def test_accelerate_cpu_single_process_is_warned(monkeypatch, caplog):
    """`accelerate launch --cpu --num_processes 2` (no mpirun) sets these two and starts one process."""
    for name in _LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    dist, device = distributed.init_distributed("cpu")
    assert not dist.enabled and device.type == "cpu"
    assert "started a single process" in caplog.text


def test_rng_restored_per_rank_or_reseeded_when_the_world_changed(caplog):
    seed.seed_everything(1)
    saved = seed.gather_rng_states(Distributed())
    expected = torch.rand(3)
    seed.restore_rng_states(saved, Distributed(), seed=1, step=5)
    assert torch.equal(torch.rand(3), expected)

    draws = []
    for rank in (0, 1, 0):  # saved by 1 process, resumed by 2: each rank its own fresh, repeatable stream
        seed.restore_rng_states(saved, Distributed(rank, 2), seed=1, step=5)
        draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    assert "reseeding" in caplog.text


def test_checkpoint_with_one_rng_state_still_loads(tmp_path):
    """Checkpoints written before per-rank RNG states hold only "rng"."""
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, model, {"rng": seed.rng_state()})
    saved = load_checkpoint(tmp_path, model)
    assert len(saved["rng_ranks"]) == 1 and torch.equal(saved["rng_ranks"][0]["torch"], saved["rng"]["torch"])
