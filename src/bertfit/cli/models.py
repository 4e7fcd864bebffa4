"""`bertfit models [install NAME]`: the encoders of the offline registry, and installing one."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list the registry's encoders (model.name values); install one",
                                 description="Registry names work as model.name once installed.")
    actions = models.add_subparsers(dest="action")
    install = actions.add_parser("install", help="download, verify (sha256) and unpack or convert a registry model")
    install.add_argument("name", help="registry name, e.g. mpnet-base")
    install.add_argument("--find-links", type=Path, metavar="DIR", help="install from this folder of wheels (offline)")
    install.add_argument("--force", action="store_true", help="install again even when installed")
    install.add_argument("--quiet", action="store_true", help="log warnings only")
    models.set_defaults(handler=_models)


def _models(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.registry.catalog import home, statuses

    if args.action == "install":
        from bertfit.registry.install import install

        folder = install(args.name, find_links=args.find_links, force=args.force)
        print(f"{args.name}: installed at {folder}; use it with --model.name {args.name}")
        return 0
    rows = [("name", "architecture", "layers", "hidden", "parameters", "download", "licence", "installed", "source")]
    for status in statuses():
        model = status.model
        rows.append((model.name, model.architecture, str(model.layers), str(model.hidden), f"{model.parameters:.1f}M",
                     f"{model.download_mb} MB", model.licence, str(status.path) if status.path else "no", model.source))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print(f"\ninstall one with: bertfit models install NAME (into {home()}, or $BERTFIT_HOME/models)")
    return 0
