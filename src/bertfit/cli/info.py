"""`bertfit env | config | presets`: what this machine, the config schema and the local datasets offer."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    env = commands.add_parser("env", help="versions, device and precision a run would use")
    env.add_argument("--device", default="auto")
    env.set_defaults(handler=_env)

    config = commands.add_parser("config", help="list every config field with its default and meaning")
    config.set_defaults(handler=_config)

    presets = commands.add_parser("presets", help="list the named local datasets")
    presets.set_defaults(handler=_presets)


def _env(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.runtime.env import environment

    facts = environment(args.device)
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    if not facts["cuda_available"]:
        print("\nno GPU: training runs on the CPU in fp32 (set train.precision=bf16 to try bf16 autocast"
              + (", which this CPU supports)" if facts["cpu_bf16"] else ")"))
    return 0


def _config(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.config import field_help

    for name, help_text, default in field_help():
        shown = ",".join(default) if isinstance(default, tuple) else default
        print(f"--{name:<32} {help_text} [default: {shown}]")
    return 0


def _presets(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.data.presets import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset.description}; labels: {', '.join(preset.label_names)}")
    return 0
