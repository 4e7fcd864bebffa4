"""The `bertfit` command: a table of command groups; each handler parses, calls the API, prints. Exit 2 on bad input.

API errors name config fields and parameters (`max_rows: must be >= 1`); `main` shows them as the
flags of the command that was run (`--max-rows: must be >= 1`).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from bertfit.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, curate, deploy, evaluation, info, models, review, training
from bertfit.errors import BertfitError

COMMAND_GROUPS = (training, evaluation, curate, review, deploy, info, models)  # each adds its commands: add_commands(subparsers)
# commands whose unknown flags are config fields (--train.lr 3e-5)
TAKES_FIELD_FLAGS = ("train", "search", "distill", "audit", "suggest", "evaluate")


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in TAKES_FIELD_FLAGS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.handler(args, extra)
    except BertfitError as error:
        print(f"error: {as_flags(str(error), commands.choices[args.command], _field_flags(args))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _field_flags(args: argparse.Namespace) -> dict[str, str]:
    """Config fields the command sets through flags of other names (inspect's --text-column), or, for
    commands that take config fields as flags, the top-level fields (name, output_dir)."""
    if args.command in TAKES_FIELD_FLAGS:
        from bertfit.config import top_level_fields

        return {field: f"--{field}" for field in top_level_fields()}
    return getattr(args, "field_flags", {})


def as_flags(message: str, command: argparse.ArgumentParser, field_flags: dict[str, str] | None = None) -> str:
    """`message` with the API's parameter names written as this command's flags: max_rows -> --max-rows.

    A name is replaced where it starts the message or a clause (`name:`), where it opens a parenthesis
    (`(overwrite)`), or anywhere when it has an underscore or a dot (max_text_chars, data.text_columns),
    so plain words such as `device` inside a sentence stay as they are. `field_flags` adds names that
    are not the command's own options (config fields set by its flags).
    """
    flags = {action.dest: next(f for f in action.option_strings if f.startswith("--")) for action in command._actions
             if any(f.startswith("--") for f in action.option_strings) and action.dest not in ("help", "config")}
    flags |= field_flags or {}
    for dest, flag in flags.items():
        escaped = re.escape(dest)
        pattern = rf"(?<![\w.-]){escaped}(?![\w-])" if "_" in dest or "." in dest else \
            rf"(?:(?<=^)|(?<=[;(] )){escaped}(?=:)|(?<=\(){escaped}(?=[) ])"
        message = re.sub(pattern, flag, message)
    return message


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    from bertfit import __version__

    parser = argparse.ArgumentParser(prog="bertfit", description="Fine-tune, evaluate and serve BERT-family text classifiers.")
    parser.add_argument("--version", action="version", version=f"bertfit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser, commands


if __name__ == "__main__":
    sys.exit(main())
