"""`bertfit env | config | presets`: what this machine, the config schema and the local datasets offer."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    env = commands.add_parser("env", help="versions, device and precision a run would use")
    env.add_argument("--device", default="auto")
    env.set_defaults(handler=_env)

    config = commands.add_parser("config", help="list every config field with its default and meaning")
    config.set_defaults(handler=_config)

    presets = commands.add_parser("presets", help="list the named datasets (a local copy, else the Hugging Face Hub's)")
    presets.set_defaults(handler=_presets)


def _env(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.runtime.env import environment, precision_advice

    facts = environment(args.device)
    width = max(map(len, facts))
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    advice = precision_advice(facts)
    if advice:
        print(f"\n{advice}")
    return 0


def _config(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.config import RunConfig
    from bertfit.config_values import field_help

    for field in field_help(RunConfig):
        shown = ",".join(field.default) if isinstance(field.default, tuple) else field.default
        choices = f" [choices: {', '.join(field.choices)}]" if field.choices else ""
        print(f"--{field.name:<32} {field.help}{choices} [default: {shown}]")
    return 0


def _presets(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.data.presets import PRESETS, preset_path

    for name, preset in PRESETS.items():
        where = "local" if all(preset_path(name, split) for split in preset.files) else f"Hub: {preset.hub.name}"
        print(f"{name:<10} {preset.description}; labels: {', '.join(preset.label_names)} ({where})")
    return 0
