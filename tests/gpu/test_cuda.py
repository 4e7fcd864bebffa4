"""The CUDA paths: mixed precision and the scaler, exact resume, pinned batches without host syncs,
torch.compile with Triton, Predictor and the service, ONNX export of a GPU-trained run, torchrun + NCCL.

Every test carries the `gpu` marker (`pytest -m gpu` on a GPU machine, scripts/gpu_check.sh runs it).
Each is parametrized by device: the `cuda` cases skip with the reason where no GPU is visible, and the
`cpu` cases run the same checks and comparisons on the CPU in the normal suite, so the test code itself
is exercised before a GPU ever runs it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertfit.artifacts import CHECKPOINT_DIR
from bertfit.config import ModelConfig, TrainConfig, load_config
from bertfit.data.batching import padded_width, tokenize
from bertfit.data.windows import TextCut
from bertfit.infer.engine import InferenceContext
from bertfit.infer.predictor import Predictor
from bertfit.model import build_classifier, load_tokenizer
from bertfit.runtime.device import Precision, choose_precision, make_scaler
from bertfit.training.checkpoint import STATE_FILE
from bertfit.training.losses import loss_function
from bertfit.training.optim import build_optimizer, build_scheduler
from bertfit.training.recipe import train
from bertfit.training.steps import Session, epoch_batches, train_step
from interrupts import straight_and_resumed
from launch import SRC, TORCHRUN, _env

NO_CUDA = ("needs a CUDA GPU (torch.cuda.is_available() is False here); run `pytest -m gpu` on a GPU machine "
           "(scripts/gpu_check.sh)")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
pytestmark = pytest.mark.gpu


def on_cuda(*values: str):
    """A parameter set for the GPU: skipped, with the reason, where none is visible."""
    return pytest.param(*values, marks=NEEDS_CUDA, id="-".join(values))


DEVICES = ["cpu", on_cuda("cuda")]
NAMES = ["World", "Sports", "Business", "Sci/Tech"]  # the AG News label order of conftest's rows

TEXTS = ["the match ended in a draw", "shares fell sharply today", "a new chip was unveiled", "talks resumed in geneva"]


def _split(model_dir: Path, rows: list[tuple[str, str]], max_length: int = 48):
    return tokenize([text for text, _ in rows], [NAMES.index(label) for _, label in rows], load_tokenizer(str(model_dir)),
                    TextCut(max_length))


def _session(model_dir: Path, device: str, precision: Precision, train_rows: int, lr: float = 1e-3) -> Session:
    """A training session on `device` built from bertfit's own parts, as the recipe builds it."""
    device = torch.device(device)
    config = TrainConfig(lr=lr, batch_size=16, epochs=1, warmup_ratio=0.0)
    model = build_classifier(ModelConfig(name=str(model_dir), dropout=0.0), num_labels=4, seed=0).to(device)
    optimizer = build_optimizer(model, config.lr, config.weight_decay, device)
    scheduler = build_scheduler(optimizer, config.warmup_ratio, total_steps=train_rows // config.batch_size)
    loss_fn = loss_function(config, np.zeros(train_rows, dtype=np.int64), 4, device)
    context = InferenceContext(device, precision, pad_id=0, batch_size=64)
    return Session(model, optimizer, scheduler, make_scaler(device, precision), loss_fn, context, config.max_grad_norm)


def _precision(device: str, name: str) -> Precision:
    """bertfit's choice for a GPU; on the CPU fp16 is built by hand (the config refuses it there) so the
    enabled GradScaler path (scale, unscale, inf check, step, update) runs on the CPU too."""
    if device == "cpu" and name == "fp16":
        return Precision("fp16", torch.float16)
    return choose_precision(name, torch.device(device))


def _train_steps(session: Session, split, steps: int) -> list[float]:
    """`steps` optimizer steps over the first rows in batches of 16 (same batches for every precision)."""
    from bertfit.data.batching import loader

    batches = [np.arange(i * 16, (i + 1) * 16) for i in range(steps)]
    return [float(train_step(session, [batch])) for batch in loader(split, batches, 0)]


def _eval_loss(session: Session, split) -> float:
    """The model's fp32 loss per sample on `split` (no autocast): how far training has taken it."""
    from bertfit.infer.engine import row_logits

    fp32 = InferenceContext(session.device, Precision("fp32", None), 0, 64)
    logits = torch.from_numpy(row_logits(session.model, split, fp32))
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(split.labels)))


MIXED = [("cpu", "bf16"), ("cpu", "fp16"), on_cuda("cuda", "bf16"), on_cuda("cuda", "fp16")]


@pytest.mark.parametrize("device, precision", MIXED)
def test_mixed_precision_steps_match_fp32(no_dropout_model_dir, ag_news_rows, device, precision):
    """Three steps in bf16 (autocast) or fp16 (autocast + GradScaler) track the same three steps in fp32."""
    split, held_out = _split(no_dropout_model_dir, ag_news_rows[:48]), _split(no_dropout_model_dir, ag_news_rows[300:332])
    reference = _session(no_dropout_model_dir, device, Precision("fp32", None), 48)
    mixed = _session(no_dropout_model_dir, device, _precision(device, precision), 48)
    seen_dtypes = set()
    mixed.model.head.register_forward_hook(lambda module, args, out: seen_dtypes.add(out.dtype))
    before = _eval_loss(reference, held_out)

    fp32_losses, mixed_losses = _train_steps(reference, split, 3), _train_steps(mixed, split, 3)

    assert seen_dtypes == {mixed.context.precision.autocast_dtype}  # autocast ran on this device, in this dtype
    assert mixed.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":  # no step was skipped for an overflow: the scale never came down
        assert mixed.scaler.get_scale() == make_scaler(torch.device(device), mixed.context.precision).get_scale()
    tolerance = {"bf16": 3e-2, "fp16": 5e-3}[precision]
    np.testing.assert_allclose(mixed_losses, fp32_losses, rtol=tolerance)
    after_fp32, after_mixed = _eval_loss(reference, held_out), _eval_loss(mixed, held_out)
    assert after_fp32 != before  # the steps moved the weights,
    assert after_mixed == pytest.approx(after_fp32, rel=tolerance)  # and to the same place


@pytest.mark.parametrize("device, precision", [("cpu", "fp32"), on_cuda("cuda", "bf16"), on_cuda("cuda", "fp16")])
def test_resume_matches_uninterrupted(tiny_overrides, ag_news_csv, monkeypatch, device, precision):
    """Ctrl-C after step 2 of 5, then --resume: the weights match a run that never stopped. Dropout is on,
    so the device's RNG state must come back; in fp16 the scaler's state travels in the checkpoint too.
    On CUDA, atomics in the backward pass make two identical runs differ in the last bits."""
    def config(name: str):
        return load_config(None, tiny_overrides + [
            "--name", name, "--data.train", str(ag_news_csv), "--data.max_train_rows", "36", "--data.max_eval_rows", "8",
            "--train.batch_size", "8", "--train.eval_every_steps", "3", "--train.device", device,
            "--train.precision", precision, "--train.keep_checkpoint", "true"])
    straight, resumed = straight_and_resumed(config, monkeypatch, 2)
    assert resumed.steps == straight.steps > 2

    expected, got = (load_file(run.run_dir / "checkpoint" / "model.safetensors") for run in (straight, resumed))
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if device == "cpu" else {"rtol": 1e-3, "atol": 1e-4}
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, **tolerance, msg=key)
    states = [torch.load(run.run_dir / CHECKPOINT_DIR / STATE_FILE, weights_only=True, map_location="cpu")
              for run in (straight, resumed)]
    assert states[0]["scaler"] == states[1]["scaler"]
    assert bool(states[1]["scaler"]) == (precision == "fp16")  # a disabled scaler saves an empty state


@pytest.mark.parametrize("device", DEVICES)
def test_bucketed_batches_arrive_pinned_and_a_step_never_waits_for_the_gpu(no_dropout_model_dir, ag_news_rows, device):
    """The training loader pads each length bucket to a multiple of 8 and, on CUDA, pins its tensors so
    the non_blocking copies are asynchronous; a step then queues its work without reading anything back
    (the one sync left is transformers' own mask check, docs/speed.md)."""
    split = _split(no_dropout_model_dir, ag_news_rows[:96])
    session = _session(no_dropout_model_dir, device, choose_precision("auto", torch.device(device)), 96)
    sizes, batches = epoch_batches(session, split, TrainConfig(batch_size=16, bucket_batches=6), epoch=0, start_batch=0)
    batches = list(batches)
    assert sizes == [16] * 6 and len(batches) == 6
    for batch in batches:
        lengths = split.lengths[batch["rows"].numpy()]
        assert batch["input_ids"].shape[1] == padded_width(int(lengths.max()))
        assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
        assert all(tensor.is_pinned() == (device == "cuda") for tensor in batch.values())
    train_step(session, batches[:1])  # first step: lazy initialisation (optimizer state, cuBLAS) may sync
    with host_syncs(device) as syncs:
        losses = [train_step(session, [batch]) for batch in batches[1:]]
    assert all(loss.device.type == device for loss in losses)
    assert [place for place in syncs if "transformers" not in place] == []
    assert np.isfinite([float(loss) for loss in losses]).all()


@contextlib.contextmanager
def host_syncs(device: str) -> Iterator[list[str]]:
    """Fills a list with the places (file:line) where CUDA made the host wait inside the block (torch's
    sync debug mode reports each as a warning from the Python line that asked); stays empty on the CPU."""
    places: list[str] = []
    if device != "cuda":
        yield places
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield places
        finally:
            torch.cuda.set_sync_debug_mode("default")
    places += [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]


@pytest.fixture(scope="module", params=DEVICES)
def trained_run(request, tiny_model_dir, ag_news_rows, tmp_path_factory) -> tuple[str, Path]:
    """A tiny run trained on the device (bf16 by default on a GPU), shared by the inference tests."""
    from conftest import write_csv

    root = tmp_path_factory.mktemp(f"run-{request.param}")
    config = load_config(None, [
        "--model.name", str(tiny_model_dir), "--model.max_length", "64", "--output_dir", str(root / "runs"),
        "--cache_dir", str(root / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
        "--train.batch_size", "16", "--train.lr", "1e-3", "--train.epochs", "1", "--name", "tiny",
        "--train.device", request.param, "--data.train", str(write_csv(root / "train.csv", ag_news_rows[:64])),
        "--data.test", str(write_csv(root / "test.csv", ag_news_rows[300:340]))])
    return request.param, train(config).run_dir


def test_predictor_and_service_on_the_device(trained_run):
    """The Predictor on the device matches the CPU in fp32 and stays close under autocast; the HTTP
    service answers from the device with the Predictor's labels."""
    import httpx

    from bertfit.deploy.serve import ServeSettings, create_app
    from conftest import LiveServer

    device, run_dir = trained_run
    on_cpu = Predictor(run_dir, device="cpu", backend="torch").predict_proba(TEXTS)
    exact = Predictor(run_dir, device=device, precision="fp32", backend="torch")
    np.testing.assert_allclose(exact.predict_proba(TEXTS), on_cpu, atol=1e-4)
    fast = Predictor(run_dir, device=device, backend="torch")  # auto: bf16 autocast on a GPU, fp32 on the CPU
    assert fast.backend.context.device.type == device
    np.testing.assert_allclose(fast.predict_proba(TEXTS), on_cpu, atol=3e-2)
    with LiveServer(create_app(fast, ServeSettings(), run_dir)) as server:
        answer = httpx.post(f"{server.url}/predict", json={"texts": TEXTS}, timeout=30)
    assert answer.status_code == 200
    assert [row["label"] for row in answer.json()["predictions"]] == [p.label for p in fast.predict(TEXTS)]


def test_onnx_export_of_a_run_trained_on_the_device(trained_run):
    """The export traces on the CPU whatever device trained the run; its self-check and the ONNX
    Predictor agree with PyTorch."""
    pytest.importorskip("onnxruntime")
    from bertfit.deploy.export import export_run

    device, run_dir = trained_run
    meta = export_run(run_dir, int8=False, max_rows=40)
    assert meta.check["onnx-fp32"]["max_probability_difference"] < 1e-4
    onnx = Predictor(run_dir, backend="onnx")
    assert onnx.backend_name == "onnx-fp32"
    np.testing.assert_allclose(onnx.predict_proba(TEXTS), Predictor(run_dir, device="cpu", backend="torch").predict_proba(TEXTS),
                               atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_a_one_process_torchrun_job_joins_its_group(monkeypatch, device):
    """As torchrun starts one process: it joins a group of one (nccl bound to its GPU, gloo on the CPU)
    and still trains as a single process."""
    from bertfit.runtime.distributed import close_distributed, init_distributed
    from launch import _free_port

    for name, value in {"TORCHELASTIC_RUN_ID": "test", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    dist, chosen = init_distributed(device)
    try:
        assert torch.distributed.is_initialized() and dist.owns_group and not dist.enabled
        assert torch.distributed.get_backend() == ("nccl" if device == "cuda" else "gloo") and chosen.type == device
        total = torch.ones(2, device=chosen)
        torch.distributed.all_reduce(total)
        assert total.tolist() == [1.0, 1.0]
    finally:
        close_distributed(dist)
    assert not torch.distributed.is_initialized()


# torchrun runs this instead of `-m bertfit.cli`: just before the run leaves its process group, it says
# which backend the group has and sends one all-reduce through it.
_REPORTING_CLI = """
import sys, torch
from bertfit.training import recipe
from bertfit.cli.main import main
real_close = recipe.close_distributed
def close_distributed(dist):
    group = torch.distributed.is_initialized()
    backend = torch.distributed.get_backend() if group else None
    if group:
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        total = torch.ones(2, device=device)
        torch.distributed.all_reduce(total)
        print("all_reduce", total.tolist())
    print("backend", backend, flush=True)
    real_close(dist)
recipe.close_distributed = close_distributed
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("device", [on_cuda("cuda")])
def test_torchrun_trains_on_one_gpu_through_nccl(tiny_overrides, ag_news_csv, tmp_path, device):
    """`torchrun --nproc-per-node 1 bertfit train` on a GPU: the run's group is nccl and carries an
    all-reduce (the CPU case of the same start is the in-process test above; 2 CPU processes: tests/runtime)."""
    driver = tmp_path / "reporting_cli.py"
    driver.write_text(_REPORTING_CLI)
    flags = tiny_overrides + ["--name", "torchrun", "--data.train", str(ag_news_csv), "--data.max_train_rows", "32",
                              "--data.max_eval_rows", "16", "--train.device", device]
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "1", str(driver), "train", *flags],
                          env=_env({"PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend nccl" in done.stdout and "all_reduce [1.0, 1.0]" in done.stdout
    assert (tmp_path / "runs" / "torchrun" / "results.json").is_file()


# Last: compiling takes the longest, so under gpu_check.sh's time limit the other checks run first.
@pytest.mark.parametrize("device", [on_cuda("cuda")])
def test_compiled_model_trains_with_inductor_on_cuda(tiny_overrides, ag_news_csv, device):
    """torch.compile with inductor (Triton kernels on GPU). The CPU runs of the same path are in
    tests/training/test_speed_paths.py (aot_eager always, inductor with BERTFIT_SLOW_TESTS=1)."""
    result = train(load_config(None, tiny_overrides + [
        "--name", "compiled", "--data.train", str(ag_news_csv), "--data.max_train_rows", "48",
        "--data.max_eval_rows", "16", "--train.compile", "true", "--train.device", device]))
    assert result.steps == 3 and np.isfinite(result.validation["loss"])
    weights = load_file(result.run_dir / "model" / "model.safetensors")
    assert not any("_orig_mod" in key for key in weights)
    assert np.isfinite(Predictor(result.run_dir, device=device).predict_proba(TEXTS)).all()
