"""`bertfit push`: the run's model folder and card reach a Hub, tested against a local fake of the Hub's commit API."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from bertfit.cli.main import main
from conftest import LiveServer

fastapi = pytest.importorskip("fastapi")


class FakeHub:
    """The calls huggingface_hub makes to publish a folder: create the repo, check the card's metadata, ask each
    file's upload mode (always regular here, so contents travel inside the commit), commit."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.created: list[dict] = []
        self.cards: list[str] = []
        self.app = fastapi.FastAPI()
        self.app.post("/api/repos/create")(self.create)
        self.app.post("/api/validate-yaml")(self.validate)
        self.app.post("/api/models/{owner}/{name}/preupload/{revision}")(self.preupload)
        self.app.post("/api/models/{owner}/{name}/commit/{revision}")(self.commit)

    async def create(self, request: fastapi.Request):
        payload = await request.json()
        self.created.append({**payload, "authorization": request.headers.get("authorization")})
        repo = f"{payload['organization']}/{payload['name']}"
        url = f"{request.base_url}{repo}"
        if repo in self.repos:  # the Hub names the existing repository in its 409
            return fastapi.responses.JSONResponse({"error": "You already created this model repo", "url": url},
                                                  status_code=409)
        self.repos[repo] = {}
        return {"url": url, "name": repo}

    async def validate(self, request: fastapi.Request):
        self.cards.append((await request.json())["content"])
        return {"errors": [], "warnings": []}

    async def preupload(self, owner: str, name: str, request: fastapi.Request):
        files = (await request.json())["files"]
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}

    async def commit(self, owner: str, name: str, revision: str, request: fastapi.Request):
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        assert lines[0]["key"] == "header"
        for line in lines[1:]:
            value = line["value"]
            self.repos[f"{owner}/{name}"][value["path"]] = base64.b64decode(value["content"])
        return {"commitUrl": f"{request.base_url}{owner}/{name}/commit/{'0' * 40}", "commitOid": "0" * 40}


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read from the environment when the library loaded
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    fake = FakeHub()
    with LiveServer(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def carded_run(tiny_exported_run, tmp_path_factory):
    """A copy of the tiny run, evaluated (push writes the card from the evaluation, as `bertfit report` does)."""
    run = tmp_path_factory.mktemp("push") / "tiny"
    shutil.copytree(tiny_exported_run, run, ignore=shutil.ignore_patterns("export"))
    assert main(["evaluate", str(run)]) == 0
    return run


def test_push_publishes_model_folder_and_card(carded_run, hub, capsys):
    assert main(["push", str(carded_run), "me/tiny-news", "--endpoint", hub.url, "--private"]) == 0
    assert "pushed" in capsys.readouterr().out
    files = hub.repos["me/tiny-news"]
    model = carded_run / "model"
    for name in ("README.md", "config.json", "model.safetensors", "bertfit.json", "tokenizer.json"):
        assert files[name] == (model / name).read_bytes(), name
    assert b"accuracy" in files["README.md"].lower()
    assert hub.created[0]["authorization"] == "Bearer hf_test_token"
    assert hub.created[0].get("visibility") == "private" or hub.created[0].get("private") is True
    # pushing again to the existing repository commits again (409 on create is "exists", not an error)
    assert main(["push", str(carded_run), "me/tiny-news", "--endpoint", hub.url]) == 0


def test_push_hf_publishes_the_stock_folder_with_the_card(carded_run, hub):
    assert main(["push", str(carded_run), "me/tiny-plain", "--hf", "--endpoint", hub.url]) == 0
    files = hub.repos["me/tiny-plain"]
    assert json.loads(files["modules.json"])[2]["type"] == "sentence_transformers.models.Dense"
    card = files["README.md"].decode()
    assert card.startswith((carded_run / "model" / "README.md").read_text()[:200])
    assert "SentenceTransformer(FOLDER)" in card
    assert not any(name.endswith(".py") for name in files)


def test_push_without_an_evaluation_or_hub_is_one_line(tiny_exported_run, carded_run, hub, monkeypatch, capsys,
                                                      tmp_path):
    unevaluated = tmp_path / "fresh"
    shutil.copytree(tiny_exported_run, unevaluated, ignore=shutil.ignore_patterns("export", "eval", "README.md"))
    assert main(["push", str(unevaluated), "me/x", "--endpoint", hub.url]) == 2
    assert "bertfit evaluate" in capsys.readouterr().err
    assert "me/x" not in hub.repos
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(carded_run), "me/x", "--endpoint", hub.url]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert main(["push", str(carded_run), "bad//name", "--endpoint", hub.url]) == 2
    assert "bad//name" in capsys.readouterr().err
