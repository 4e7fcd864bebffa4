"""Write docs/configuration.md from the config schema, so the reference page always says what `bertfit config` says.

    python scripts/config_reference.py            # rewrite docs/configuration.md
    python scripts/config_reference.py --check    # exit 1 when the page differs from the schema (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
INTRO = """# Configuration

One schema of frozen dataclasses with the sections `data`, `model`, `train`, `lora` and `distill`, and the
top-level fields `name`, `output_dir` and `cache_dir`. A YAML file and `--section.field value` flags set the
same fields (`bertfit train --config run.yaml --train.lr 3e-5`); every problem (an unknown field, a wrong
type, a value out of range, settings that do not combine) is reported at once, with a suggestion for typos:

```
error: invalid config (2 problem(s)):
  - train.lrr: unknown field (did you mean train.lr?)
  - model.pooling: must be one of cls, mean, got 'max'
```

A field left unset (empty default below) is chosen when training starts, from the data and the encoder
([training](training.md#the-plan-every-setting-decided-before-the-first-step)), and saved in the run's
`config.yaml`. `bertfit config` prints this table in the terminal. This page is generated from the schema by
`python scripts/config_reference.py`.
"""


def render() -> str:
    from bertfit.config import RunConfig
    from bertfit.config_values import field_help

    sections: dict[str, list[str]] = {}
    for field in field_help(RunConfig):
        section = field.name.split(".")[0] if "." in field.name else "top level"
        default = ", ".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
        shown = "" if default is None else f"`{default}`"
        allowed = ", ".join(f"`{choice}`" for choice in field.choices)
        text = field.help.replace("|", "\\|")
        sections.setdefault(section, []).append(f"| `{field.name}` | {shown} | {allowed} | {text} |")
    parts = [INTRO]
    for section, rows in sections.items():
        parts += [f"## {section}\n", "| field | default | allowed | meaning |", "|---|---|---|---|", *rows, ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    page = render()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != page:
            sys.exit(f"{PAGE} is out of date: run python scripts/config_reference.py")
        return
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
