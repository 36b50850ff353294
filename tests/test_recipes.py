from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from augmentor.errors import RecipeError
from augmentor.recipes import apply_overrides, from_mapping, load_recipe, register_recipe_kind, to_dict


@dataclasses.dataclass(frozen=True)
class _Train:
    steps: int = 10
    learning_rate: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    algorithm: Literal["cgan", "wgan-gp"] = "cgan"
    diffaugment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")


@register_recipe_kind("test-kind")
@dataclasses.dataclass(frozen=True)
class _Recipe:
    kind: str
    name: str
    train: _Train = _Train()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_valid_recipe_loads_into_frozen_typed_objects(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, 'kind = "test-kind"\nname = "x"\n[train]\nsteps = 5\nbetas = [0, 0.9]\n'))
    assert recipe.train.steps == 5
    assert recipe.train.betas == (0.0, 0.9)
    assert recipe.train.learning_rate == 2e-4
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.train.steps = 6  # type: ignore[misc]
    assert to_dict(recipe) == {
        "kind": "test-kind",
        "name": "x",
        "train": {"steps": 5, "learning_rate": 2e-4, "betas": [0.0, 0.9], "algorithm": "cgan", "diffaugment": []},
    }
    # the resolved recipe loads back to the same object
    assert from_mapping(_Recipe, to_dict(recipe)) == recipe


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "test-kind"\nname = "x"\n[train]\nstep = 5\n', "unknown key 'train.step' (did you mean 'steps'?)"),
        ('kind = "test-kind"\nname = "x"\n[train]\nsteps = "many"\n', "train.steps: expected an integer, got 'many'"),
        ('kind = "test-kind"\nname = "x"\n[train]\nalgorithm = "wgan-pg"\n', "(did you mean 'wgan-gp'?)"),
        ('kind = "test-kind"\nname = "x"\n[train]\nsteps = -1\n', "steps must be positive"),
        ('kind = "test-kind"\n', "missing required key 'name'"),
        ('kind = "test-knd"\nname = "x"\n', "unknown kind 'test-knd' (did you mean 'test-kind'?)"),
        ('name = "x"\n', "missing top-level key 'kind'"),
        ('kind = "test-kind"\nname = \n', "not valid TOML"),
    ],
)
def test_bad_recipes_are_one_line_errors_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(_write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_overrides_are_type_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, 'kind = "test-kind"\nname = "x"\n')
    recipe = load_recipe(path, ["train.steps=200", "train.algorithm=wgan-gp", "train.diffaugment=['translation', 'cutout']"])
    assert recipe.train.steps == 200
    assert recipe.train.algorithm == "wgan-gp"
    assert recipe.train.diffaugment == ("translation", "cutout")
    with pytest.raises(RecipeError, match=r"train\.steps: expected an integer"):
        load_recipe(path, ["train.steps=2.5"])
    with pytest.raises(RecipeError, match=r"expected section\.key=value"):
        load_recipe(path, ["train.steps"])
    with pytest.raises(RecipeError, match="'name' is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.part=1"])


def test_missing_recipe_lists_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not found"):
        load_recipe(tmp_path / "nope.toml")
