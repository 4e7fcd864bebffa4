"""Load test of `bertfit serve` on loopback: latency percentiles and texts/s per backend.

    python bench/serve_load.py runs/demo --backends torch onnx-fp32 onnx-int8 --clients 20 --duration 60
    python bench/serve_load.py runs/demo --backends torch auto     # auto: what `bertfit export --target auto` chose

For each backend: start `bertfit serve RUN --backend B` on 127.0.0.1 (a child process), warm it up,
run CLIENTS concurrent clients, each posting one AG News test text per request in a loop, for DURATION
seconds (a bounded loop), then send malformed requests (bad JSON, wrong types, empty list, a 1 MB text,
non-UTF-8 bytes) and check each gets a 4xx while the service keeps answering. Writes
bench/out/serve_<backend>.json and bench/out/serve_summary.json, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common

BAD_REQUESTS = {
    "malformed JSON": b'{"texts": [',
    "wrong type": b'{"texts": [1, 2, 3]}',
    "empty list": b'{"texts": []}',
    "1 MB text": json.dumps({"text": "a" * 1_000_000}).encode(),
    "non-UTF-8": '{"text": "caf\u00e9"}'.encode("latin-1"),
}


def bad_inputs(base: str) -> dict:
    """Each malformed request must get a 4xx while the service keeps answering."""
    import httpx

    result = {}
    for name, body in BAD_REQUESTS.items():
        response = httpx.post(f"{base}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
        still_up = httpx.post(f"{base}/predict", json={"text": "still serving?"}, timeout=30).status_code == 200
        result[name] = {"status": response.status_code, "service_ok_after": still_up}
    return result


def accuracy_of(run: Path, backend: str) -> float | None:
    """Accuracy on the export check's rows (the same rows for every backend); auto: the recorded choice's."""
    from bertfit.artifacts import read_export_meta

    if not (run / "export" / "export.json").is_file():
        return None
    export = read_export_meta(run / "export")
    backend = export.default_variant() if backend == "auto" else backend
    if backend == "torch":
        return export.check["torch_accuracy"]
    return (export.check or {}).get(backend, {}).get("accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx-fp32", "onnx-int8"])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per backend")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="server CPU threads per model call (default: all cores)")
    parser.add_argument("--out", type=Path, default=common.OUT)
    args = parser.parse_args()
    texts, _ = common.ag_news_test(2000)
    rows = []
    for backend in args.backends:
        port = common.free_port()
        child = common.start_server(args.run, port, common.serve_flags(backend, args))
        base = f"http://{common.HOST}:{port}"
        try:
            result = {**common.provenance(), "backend": backend, "run": str(args.run), "clients": args.clients,
                      "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "threads": args.threads,
                      **common.served_load(base, texts, args.clients, args.duration),
                      "accuracy": accuracy_of(args.run, backend), "bad_inputs": bad_inputs(base)}
        finally:
            common.stop_server(child)
        common.write_json(args.out / f"serve_{backend}.json", result)
        rows.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "bad_inputs"}), flush=True)
    common.write_json(args.out / "serve_summary.json", rows)
    base_rate = next((r["texts_per_second"] for r in rows if r["backend"] == "torch"), None)
    print("\n| backend | texts/s | vs torch | p50 ms | p95 ms | p99 ms | mean batch | failed | accuracy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speedup = f"{r['texts_per_second'] / base_rate:.2f}x" if base_rate else "-"
        accuracy = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        print(f"| {r['backend']} | {r['texts_per_second']} | {speedup} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
              f"| {r['mean_batch_texts']} | {r['failed']}/{r['requests']} | {accuracy} |")


if __name__ == "__main__":
    main()
