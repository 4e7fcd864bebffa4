"""`bertfit push RUN REPO_ID`: publish a run's model folder and its card to the Hugging Face Hub.

The folder is what `bertfit train` saved (weights, tokenizer, config.json with the modelling code it
names, bertfit.json) and the card `bertfit evaluate` wrote as its README.md, so the Hub page states
the run's test metrics and limits; a run never evaluated is refused rather than published undescribed.
`--hf` publishes the stock sentence-transformers folder of `bertfit export --hf` instead, with the card.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from bertfit import artifacts
from bertfit.atomic import MODEL_MARKER
from bertfit.errors import BertfitError, brief

CARD = "README.md"
log = logging.getLogger(__name__)


def push_run(run: Path, repo_id: str, *, plain: bool = False, private: bool | None = None,
             endpoint: str | None = None, message: str | None = None) -> str:
    """Create `repo_id` if needed and commit the run's model folder (plain: its sentence-transformers export) to
    it; returns the commit's URL. The token is the one `hf auth login` stored or HF_TOKEN."""
    folder = artifacts.model_folder(run)
    card = folder / CARD
    if not card.is_file():  # `bertfit report` writes it; from the run's evaluation, or an error that asks for one
        from bertfit.evaluate.model_card import render_model_card

        log.info("writing the model card %s from the run's evaluation", render_model_card(run))
    if artifacts.read_model_meta(folder).adapter and not plain:
        raise BertfitError(f"{run}: the model keeps LoRA adapters that load only beside their base model; write a "
                           f"standalone folder with `bertfit merge {run} MERGED`, evaluate and push that")
    with tempfile.TemporaryDirectory(prefix="bertfit-push-") as scratch:
        source = _plain_folder(run, card, Path(scratch)) if plain else folder
        return _upload(source, repo_id, private, endpoint, message or f"Upload bertfit run {Path(run).name}")


def _plain_folder(run: Path, card: Path, scratch: Path) -> Path:
    """The sentence-transformers export of `run`, its README the run's card followed by how to load the folder."""
    from bertfit.deploy.hf_export import export_hf

    written = export_hf(run, scratch / "hf")
    loading = (written.folder / CARD).read_text()
    shutil.copyfile(card, written.folder / CARD)
    with open(written.folder / CARD, "a") as file:
        file.write("\n" + loading)
    return written.folder


def _upload(folder: Path, repo_id: str, private: bool | None, endpoint: str | None, message: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=endpoint)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message,
                                   ignore_patterns=[MODEL_MARKER, ".*"])
    except OfflineModeIsEnabled:
        raise BertfitError("push: HF_HUB_OFFLINE is set; unset it to reach the Hub") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise BertfitError(f"push to {repo_id} failed: {brief(error)}; check the repository name and that your "
                           "token may write to it (`hf auth login` or HF_TOKEN)") from None
    return str(commit.commit_url)
