"""The documentation: the site builds with no broken link, every page is in its navigation, the configuration
reference says what the schema says, the README is a front page whose links resolve, and no text in the
repository speaks of sessions or issue numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict` fails on a broken link or anchor, a missing page or a bad configuration."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "decisions" / "index.html").is_file()


def _nav_pages(entries) -> set[str]:
    pages: set[str] = set()
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages |= _nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert _nav_pages(config["nav"]) == {path.name for path in DOCS.glob("*.md")}


def test_the_configuration_reference_says_what_the_schema_says():
    done = subprocess.run([sys.executable, "scripts/config_reference.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _slug(heading: str) -> str:
    """The anchor GitHub and mkdocs give a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return re.sub(r"\s+", "-", text)


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 150
    first_commands = [line.split("#")[0].strip() for line in lines[:8] if line.startswith("make ")]
    assert first_commands == ["make demo", "make test"]  # the two commands come first
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path
        if not file.is_file():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {_slug(heading) for heading in headings}:
                broken.append(target)
    assert not broken, f"README links that lead nowhere: {broken}"


def test_no_text_speaks_of_sessions_or_issue_numbers():
    """The repository speaks to its users; git keeps the history."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    pattern = r"session [0-9]+|sessions [0-9]+-[0-9]+|issue #?[0-9]+"
    done = subprocess.run(["git", "grep", "--untracked", "-niE", pattern, "--", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, f"history words in the tree:\n{done.stdout[:3000]}"
