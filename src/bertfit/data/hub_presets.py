"""A preset with no local copy is loaded from the Hugging Face Hub: the same data set, splits and label names.

Each preset names its Hub copy. Labels arrive as the Hub's ClassLabel ids (or names) and are mapped by name to
the preset's own label order, so a run trained on the Hub copy and one trained on the local copy share their
labels. `datasets` caches what it loads: the first use needs a connection, later ones do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bertfit.errors import BertfitError

Columns = dict[str, list]


@dataclass(frozen=True)
class HubCopy:
    """Where a preset lives on the Hub: the dataset, its text and label columns, and Hub label names that differ
    from the preset's (`renamed`: Hub name -> preset name). Labels without a ClassLabel are ids in the preset's order."""

    name: str
    text_column: str = "text"
    label_column: str = "label"
    config: str | None = None
    renamed: dict[str, str] = field(default_factory=dict)


def hub_columns(preset: str, copy: HubCopy, label_names: tuple[str, ...], split: str, local_hint: str) -> tuple[str, Columns]:
    """The split's columns `text` and `label` (ids in `label_names`' order), and where they came from."""
    ways_out = (f"connect to the internet (the copy is cached after its first load), or set BERTFIT_DATA_DIR to a "
                f"folder holding {local_hint}")
    try:
        import datasets
    except ImportError:
        raise BertfitError(f"preset {preset!r}: there is no local copy, and loading it from the Hugging Face Hub needs "
                           f"the datasets package: pip install 'bertfit[hub]', or set BERTFIT_DATA_DIR to a folder "
                           f"holding {local_hint}") from None
    try:
        part = datasets.load_dataset(copy.name, copy.config, split=split)
    except Exception as error:  # offline, a moved copy, a network error: one line with both ways out
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise BertfitError(f"preset {preset!r}: there is no local copy, and the Hub copy {copy.name} could not be "
                           f"loaded ({reason}); {ways_out}") from None
    feature = part.features.get(copy.label_column)
    hub_names = list(getattr(feature, "names", None) or [])
    labels = [_preset_id(raw, hub_names, copy.renamed, label_names, preset) for raw in part[copy.label_column]]
    return f"hub:{copy.name}[{split}]", {"text": list(part[copy.text_column]), "label": labels}


def _preset_id(raw: object, hub_names: list[str], renamed: dict[str, str], label_names: tuple[str, ...],
               preset: str) -> int:
    """A Hub label as an id of the preset's label order, matched by name."""
    name = hub_names[raw] if hub_names and isinstance(raw, int) else raw
    if isinstance(name, int):
        return name  # no names on the Hub: its ids are the preset's
    name = renamed.get(str(name), str(name))
    if name not in label_names:
        raise BertfitError(f"preset {preset!r}: the Hub copy's label {name!r} is none of the preset's labels "
                           f"({', '.join(label_names)}); report it, or use a local copy (BERTFIT_DATA_DIR)")
    return label_names.index(name)
