"""The pieces of bertfit's self-contained HTML pages: one style, tables, figures embedded as base64, CSV rows."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f2f2f2}td.t,th.t{text-align:left;max-width:640px}.warn{background:#fff3cd;border:1px solid #e0b000;
padding:.6em 1em;border-radius:4px}.good{color:#13795b}.bad{color:#b00020}img{max-width:100%;border:1px solid #eee}
.diff{background:#fff3cd}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"""


def embed_png(path: Path) -> str:
    """An <img> holding the PNG itself, or a note that the figure is missing."""
    if not path.is_file():
        return f"<p><i>{html.escape(path.name)} not found</i></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list[Any]], text_columns: int = 1) -> str:
    """An HTML table; the first `text_columns` columns are left-aligned text, numbers in general format (4 digits:
    0.9017, 1e-05), so a learning rate shows as itself and not as 0.0000."""
    def cell(value: Any, index: int, tag: str) -> str:
        shown = f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
        return f'<{tag}{" class=t" if index < text_columns else ""}>{shown}</{tag}>'
    head = "".join(cell(h, i, "th") for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(v, i, "td") for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")


def read_csv(path: Path, limit: int) -> list[dict[str, str]]:
    """The first `limit` rows of a CSV file with a header, or none when the file is missing."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return [row for _, row in zip(range(limit), csv.DictReader(file))]
