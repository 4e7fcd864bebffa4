"""What the benchmarks share: where results go, the machine they ran on, the data they read, seeded samples, and
the loopback server and clients of the serving benchmarks.

A script imports it as `import common` (`python bench/NAME.py` puts bench/ on sys.path). Nothing here imports torch
or bertfit's training when it is imported, so every script's `--help` answers at once; the functions that need them
import them when called. `python bench/common.py` lists the benchmarks and what each measures.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import csv
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bertfit.data.splits import TextDataset

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"  # every result file (git-ignored)
HOST = "127.0.0.1"  # the serving benchmarks never leave this machine

# Benchmarks run offline: no hub lookups, no tracker asking for an account, no tokenizer threads fighting torch's.
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("WANDB_DISABLED", "true"),
                      ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_name, _value)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """CPU model, cores and the flags that decide speed (VNNI, AMX, bf16), with the load average right now."""
    from bertfit.runtime.cpu import cpu_features

    return {**cpu_features(), "load_average": load_average()}


def provenance() -> dict[str, Any]:
    """What every result file opens with: the command as typed from the repository root, the date, the machine."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return {"command": " ".join(["python", str(shown), *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
            "cpu": machine()}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of the running process `pid` (all its threads, from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of repeated measurements (and every value)."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "all": [round(v, digits) for v in values]}


def predict_rate(predictor: Any, texts: list[str], batch_size: int) -> float:
    """Texts a second of one pass of `predictor.predict_proba` over `texts` in request-sized batches (tokenising
    included, as in `bertfit serve`)."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        predictor.predict_proba(texts[start:start + batch_size])
    return len(texts) / (time.perf_counter() - started)


def against(values: list[float], reference: list[float]) -> dict[str, Any]:
    """Median and range of per-round ratios to a reference measured in the same rounds (interleaving makes the
    machine's load hit both alike)."""
    ratios = [value / base for value, base in zip(values, reference)]
    return {"median": round(statistics.median(ratios), 2), "range": [round(min(ratios), 2), round(max(ratios), 2)]}


def limit_threads(threads: int | None) -> None:
    """Torch's and the BLAS libraries' threads (0 or None: all cores)."""
    if threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(threads)


def ag_news_test(limit: int | None = None) -> tuple[list[str], list[int]]:
    """The official AG News test rows in file order: 'title body' texts and label ids 0-3."""
    from bertfit.data.presets import data_dir

    with open(data_dir() / "ag_news" / "test.csv", newline="", encoding="utf-8") as file:
        rows = [(f"{title} {body}", int(label) - 1) for label, title, body in csv.reader(file)][:limit]
    return [text for text, _ in rows], [label for _, label in rows]


def preset(name: str) -> TextDataset:
    """A preset's splits as bertfit reads them (seed 0): .labels.names, .splits["train"], .splits["test"]."""
    from bertfit.config import load_config
    from bertfit.data.splits import load_dataset

    return load_dataset(load_config(None, ["--data.train", name]).data, seed=0)


def ag_news_vectors(test_rows: int | None = None) -> tuple[Any, Any, Any, Any]:
    """The curation benchmarks' fast path: the 5,000-row AG News train subset as bertfit's audit reads it (rows with
    .texts, .labels, .names), the frozen embedded encoder's pooled vectors of its texts, and those of the first
    `test_rows` official test rows with their label ids."""
    import numpy as np

    from bertfit.config import load_config
    from bertfit.curate.folds import frozen_features, read_training_rows
    from bertfit.data.read import read_split

    base = load_config(None, ["--data.train", "ag_news"])
    rows = read_training_rows(base)
    test = read_split("ag_news", "test", base.data)
    test_texts, test_labels = test.texts[:test_rows], np.asarray(test.raw_labels[:test_rows])
    return rows, frozen_features(base, rows.texts), frozen_features(base, test_texts), test_labels


def sample(labels: list[int], per_class: int, seed: int) -> list[int]:
    """Row indices: `per_class` rows of every class, drawn with `seed` (the rows every few-shot benchmark uses)."""
    import numpy as np

    rng = np.random.default_rng([seed, per_class])
    labels_array = np.asarray(labels)
    return sorted(int(i) for c in np.unique(labels_array)
                  for i in rng.choice(np.flatnonzero(labels_array == c), per_class, replace=False))


def write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    """A text,label CSV, what a user would hand bertfit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("text", "label"), *zip(texts, labels)])
    return path


def train_on_rows(path: Path, folder: Path, name: str, seed: int, flags: tuple[str, ...] | list[str] = ()):
    """bertfit trained on the CSV at `path` with no settings but `flags` (no progress bar, no trackers), into
    folder/name, replacing an earlier run of that name: its TrainResult."""
    from bertfit.config import load_config
    from bertfit.training.recipe import train

    config = load_config(None, ["--data.train", str(path), "--output_dir", str(folder), "--name", name,
                                "--train.seed", str(seed), "--train.progress", "false", "--train.report_to", "[]",
                                *flags])
    return train(config, overwrite=True)


def preset_with_test_csv(name: str, folder: Path) -> tuple[TextDataset, Path]:
    """A preset's splits, and its test split as a CSV of label names: what a few-shot run is scored on."""
    dataset = preset(name)
    names, test = dataset.labels.names, dataset.splits["test"]
    return dataset, write_csv(folder / f"{name}-test.csv", test.texts, [names[label] for label in test.labels])


def few_shot_run(texts: list[str], labels: list[str], test_csv: Path, seed: int, folder: Path,
                 settings: list[str]) -> dict[str, Any]:
    """bertfit on a few labelled rows with no settings but `settings`, scored on `test_csv`: folder/run-SEED."""
    path = write_csv(folder / f"train-{seed}.csv", texts, labels)
    result = train_on_rows(path, folder, f"run-{seed}", seed, ["--data.test", str(test_csv), *settings])
    saved = (result.run_dir / "config.yaml").read_text()
    plan = result.plan  # what model.name auto chose, and the plan's estimate beside the measured time
    return {"f1_macro": result.test["f1_macro"], "accuracy": result.test["accuracy"],
            "train_seconds": round(result.train_seconds, 1), "steps": result.steps,
            "method": "contrastive" if "method: contrastive" in saved else "standard",
            "model": plan.config.model.name if plan else None,
            "estimate_seconds": round(plan.seconds, 1) if plan and plan.seconds is not None else None,
            "estimate_train_seconds": round(plan.training_seconds, 1) if plan and plan.training_seconds is not None else None}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(run: Path, port: int, flags: list[str], log: Path | None = None, seconds: float = 120) -> subprocess.Popen:
    """`bertfit serve RUN` on HOST:port (no API key) as a child process, returned once GET /health answers 200;
    stops the benchmark with the server's last output when it dies first. stderr goes to `log` when given."""
    import httpx

    command = [sys.executable, "-m", "bertfit.cli", "serve", str(run), "--host", HOST, "--port", str(port), *flags]
    stderr = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (the child holds it open)
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                             env={**os.environ, "BERTFIT_API_KEY": ""})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"bertfit serve {' '.join(flags)} exited: "
                             f"{(log.read_text() if log else child.stderr.read())[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return child
        except httpx.TransportError:
            time.sleep(0.3)
    child.kill()
    raise SystemExit(f"bertfit serve {' '.join(flags)} did not start in {seconds:.0f} s")


def stop_server(child: subprocess.Popen) -> None:
    """SIGTERM (the server finishes its requests), then a kill if it has not exited within a minute."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(60)
    except subprocess.TimeoutExpired:
        child.kill()


async def clients(base: str, texts: list[str], count: int, duration: float, timeout: float = 60) -> dict[str, Any]:
    """`count` concurrent clients, each posting one text a request in a loop for `duration` seconds: requests,
    failures, latency percentiles, and the server's /health counters before and after."""
    import httpx
    import numpy as np

    latencies: list[float] = []
    failures: list[str] = []

    async def client(http: httpx.AsyncClient, offset: int, stop_at: float) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                response = await http.post(f"{base}/predict", json={"text": texts[i % len(texts)]})
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as error:
                failures.append(repr(error))
            latencies.append(time.perf_counter() - started)
            i += 7

    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        before = (await http.get(f"{base}/health")).json()
        started = time.perf_counter()
        await asyncio.gather(*(client(http, k * 97, started + duration) for k in range(count)))
        elapsed = time.perf_counter() - started
        after = (await http.get(f"{base}/health")).json()
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "failed": len(failures), "failures_sample": failures[:5],
            "seconds": round(elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "health_before": before, "health_after": after}


def served_load(base: str, texts: list[str], count: int, duration: float) -> dict[str, Any]:
    """Texts/s and latency percentiles of `count` concurrent clients after a warm-up, with the texts a model call
    merged on average (the server's batching counters)."""
    warm_up(base, texts)
    result = asyncio.run(clients(base, texts, count, duration))
    before, after = result.pop("health_before"), result.pop("health_after")
    batches = after["batches_run"] - before["batches_run"]
    texts_run = after["texts_run"] - before["texts_run"]
    return {**result, "texts_per_second": round((result["requests"] - result["failed"]) / result["seconds"], 1),
            "mean_batch_texts": round(texts_run / max(batches, 1), 2)}


def serve_flags(backend: str, args: Any) -> list[str]:
    """`bertfit serve` flags from a benchmark's --max-batch, --max-wait-ms and --threads (unset: the server's own)."""
    flags = ["--backend", backend, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    return flags + (["--threads", str(args.threads)] if getattr(args, "threads", None) else [])


def warm_up(base: str, texts: list[str]) -> None:
    """A server's first calls allocate buffers and fill caches: twenty requests that are not measured."""
    import httpx

    for text in texts[:20]:
        httpx.post(f"{base}/predict", json={"text": text}, timeout=120)


def benchmarks() -> dict[str, str]:
    """Every benchmark script in bench/ and the first line of its docstring (read, not imported)."""
    here = Path(__file__).resolve().parent
    return {path.name: (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").splitlines()[0]
            for path in sorted(here.glob("*.py")) if path.name != Path(__file__).name}


def main() -> None:
    argparse.ArgumentParser(description="List the benchmarks in bench/ and what each measures; every script takes "
                                        "--help, and docs/benchmarks.md gives each figure with its command.").parse_args()
    for name, purpose in benchmarks().items():
        print(f"python bench/{name:<22} {purpose}")
    print(f"\nresults go to {OUT.relative_to(ROOT)}/; the measured figures: docs/benchmarks.md")


if __name__ == "__main__":
    main()
