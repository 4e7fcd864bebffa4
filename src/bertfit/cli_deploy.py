"""`bertfit export | serve`: parsers and handlers (see cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertfit.errors import BertfitError

# Kept here (not imported from bertfit.predict) so `bertfit --help` does not wait for torch.
BACKENDS = ("auto", "torch", "onnx", "onnx-fp32", "onnx-int8")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """export and serve: the commands that deploy a run."""
    _add_export(commands)
    _add_serve(commands)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a run for deployment (ONNX, optionally int8) and check it")
    export.add_argument("run", type=Path)
    export.add_argument("--onnx", action="store_true", help="write RUN/export/model.onnx (the only format so far)")
    export.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantisation)")
    export.add_argument("--max-rows", type=int, help="check the export on at most N test rows (default: all)")
    export.add_argument("--batch-size", type=int, default=64)
    export.set_defaults(handler=_export)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="HTTP service (FastAPI): POST /predict, GET /health, /metadata, / (a page)")
    serve.add_argument("run", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--backend", default="auto", choices=BACKENDS)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--threads", type=int, help="CPU threads per model call (default: all cores)")
    serve.add_argument("--max-batch", type=int, default=32, help="texts per model call when batching requests")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join")
    serve.add_argument("--max-texts", type=int, default=256, help="texts per request")
    serve.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text")
    serve.add_argument("--max-body-bytes", type=int, default=2_000_000, help="request body size")
    serve.add_argument("--api-key-env", default="BERTFIT_API_KEY",
                       help="environment variable holding the API key; when set, requests need header X-API-Key")
    serve.set_defaults(handler=_serve)


def _export(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.export import export_run

    if not args.onnx:
        raise BertfitError("choose an export format: --onnx (add --int8 for a quantised copy)")
    if args.max_rows is not None and args.max_rows < 1:
        raise BertfitError(f"--max-rows must be >= 1, got {args.max_rows}")
    meta = export_run(args.run, int8=args.int8, max_rows=args.max_rows, batch_size=args.batch_size)
    check = meta["check"]
    print(f"exported to {args.run / 'export'} ({', '.join(meta['files'].values())})")
    print(f"check on {check['rows']} {check['split']} rows: torch accuracy {check['torch_accuracy']:.4f}")
    for kind in meta["files"]:
        c = check[kind]
        print(f"  {kind}: accuracy {c['accuracy']:.4f} ({c['accuracy_change_points']:+.2f} points), "
              f"max probability difference {c['max_probability_difference']:.2e}")
    return 0


def _serve(args: argparse.Namespace, _: list[str]) -> int:
    import os

    from bertfit.serve import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                             max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                             api_key=os.environ.get(args.api_key_env) or None)
    print(f"serving {args.run} on http://{args.host}:{args.port} (docs: /docs); Ctrl-C stops after in-flight requests")
    serve(args.run, settings, host=args.host, port=args.port, backend=args.backend, device=args.device,
          threads=args.threads)
    return 0
