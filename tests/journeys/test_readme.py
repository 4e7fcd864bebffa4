"""The README's Python code runs as written: every ```python block, in a folder holding the files it names
(run.yaml for the tiny model on a slice of AG News, with no test split, like a user's own data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import write_csv

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2 and any("train(" in block for block in blocks)


def test_the_readmes_python_blocks_run_as_written(tiny_model_dir, ag_news_rows, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    write_csv(tmp_path / "train.csv", ag_news_rows[:160])
    # The name the pipeline block writes as a placeholder is the run's actual name here, so both blocks run unchanged.
    config = {"name": "<name>", "output_dir": "runs", "cache_dir": str(tmp_path / "cache"),
              "data": {"train": "train.csv"},
              "model": {"name": str(tiny_model_dir), "max_length": 64},
              "train": {"method": "standard", "stack": "never", "progress": False, "tensorboard": False,
                        "batch_size": 16, "epochs": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(python_blocks(README.read_text(encoding="utf-8")), start=1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
    result, classifier = namespace["result"], namespace["classifier"]
    assert result.test is None and result.metrics["split"] == "validation"  # no test data: validation's scores
    assert 0 <= result.metrics["accuracy"] <= 1 and Path(result.run_dir).name == "<name>"
    scores = classifier("Stocks rallied on Friday", top_k=None)
    assert {score["label"] for score in scores} == {"World", "Sports", "Business", "Sci/Tech"}
