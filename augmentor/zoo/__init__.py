"""The model zoo: the models shipped with augmentor and the user's own.

Shipped models live in ``augmentor/zoo/weights/<name>/`` (``model.safetensors`` + ``model.json``);
user models in ``$AUGMENTOR_HOME/models/<name>/`` (default ``~/.augmentor/models``), e.g. the output
directory of ``augment train`` copied or linked there. A model is named by its directory name; a
user model shadows a shipped one of the same name. Weights are loaded only after their SHA-256 matches
the card, and nothing is ever unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augmentor.errors import AugmentorError, did_you_mean

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def user_models_dir() -> Path:
    """``$AUGMENTOR_HOME/models`` (default ``~/.augmentor/models``)."""
    home = os.environ.get("AUGMENTOR_HOME")
    return (Path(home) if home else Path.home() / ".augmentor") / "models"


@dataclass(frozen=True)
class ModelEntry:
    """One model of the zoo, described from its card (weights not loaded)."""

    name: str
    path: Path
    origin: str  # "shipped" | "user"
    family: str
    algorithm: str
    class_names: tuple[str, ...]
    image_size: int
    training_data_sha256: str
    weights_sha256: str
    card: dict[str, Any]


def _entry(path: Path, origin: str) -> ModelEntry:
    from augmentor.models.card import read_card

    card = read_card(path)
    architecture = card.get("architecture", {})
    config = architecture.get("config", {})
    training = card.get("training_data", {}) or {}
    return ModelEntry(
        name=path.name,
        path=path,
        origin=origin,
        family=str(architecture.get("family", "?")),
        algorithm=str(card.get("algorithm", "?")),
        class_names=tuple(card["class_names"]),
        image_size=int(config.get("image_size", card.get("image_size", 0))),
        training_data_sha256=str(training.get("sha256", "")),
        weights_sha256=str(card["weights_sha256"]),
        card=card,
    )


def list_models() -> list[ModelEntry]:
    """Every model: user models first (they shadow shipped ones of the same name), then shipped ones.

    A directory whose card cannot be read is skipped here (``resolve_model`` reports it by name).
    """
    entries: dict[str, ModelEntry] = {}
    for origin, root in (("user", user_models_dir()), ("shipped", SHIPPED_DIR)):
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "model.json").exists()):
            if folder.name in entries:
                continue
            try:
                entries[folder.name] = _entry(folder, origin)
            except AugmentorError:
                continue
    return list(entries.values())


def resolve_model(name_or_path: str | Path) -> ModelEntry:
    """A model by directory path or by zoo name; a wrong name gets the list of valid ones."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        return _entry(candidate, "path")
    models = {entry.name: entry for entry in list_models()}
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    names = list(models)
    raise AugmentorError(
        f"unknown model {str(name_or_path)!r}{did_you_mean(str(name_or_path), names)}; "
        f"available: {', '.join(names) or '(none)'}; or give a model directory"
    )


def model_for_classes(class_names: list[str]) -> ModelEntry:
    """The one model that knows every class in ``class_names`` (``all`` is not allowed here).

    Raises:
        AugmentorError: a class no model knows (listing the valid class names), or classes known by
            several models (listing them: pass --model).
    """
    models = list_models()
    known = sorted({name for entry in models for name in entry.class_names})
    for name in class_names:
        if name not in known:
            raise AugmentorError(f"unknown class {name!r}{did_you_mean(name, known)}; valid classes: {', '.join(known) or '(no models installed)'}")
    matches = [entry for entry in models if set(class_names) <= set(entry.class_names)]
    if not matches:
        raise AugmentorError(f"no single model knows all of {', '.join(class_names)}; generate them in separate runs")
    if len(matches) > 1:
        raise AugmentorError(f"classes {', '.join(class_names)} are known by several models ({', '.join(m.name for m in matches)}); pass --model NAME")
    return matches[0]
