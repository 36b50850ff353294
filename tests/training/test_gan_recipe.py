"""The ``gan`` recipe kind: shipped recipes load, strict keys with near-misses, ranges, algorithm defaults."""

from __future__ import annotations

import pytest

from augmentor.errors import RecipeError
from augmentor.recipes import load_recipe, to_dict, validate_recipe
from augmentor.training.recipe import GanRecipe

SHIPPED = ["tiny-cgan", "tiny-wgan-gp", "frid-adar-liver", "onishi-lung", "onishi-lung-dcgan"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(name, expect="gan")
    assert isinstance(recipe, GanRecipe)
    assert validate_recipe(to_dict(recipe), expect="gan") == recipe  # the resolved recipe validates to itself


def test_shipped_reference_recipes() -> None:
    liver, lung = load_recipe("frid-adar-liver"), load_recipe("onishi-lung")
    assert liver.train.algorithm == "cgan" and liver.data.classes == ("cyst", "metastasis", "hemangioma")
    assert lung.train.algorithm == "wgan-gp" and lung.data.classes == ("benign", "malignant")
    assert liver.model.image_size == lung.model.image_size == 64


def test_unknown_key_names_it_with_a_near_miss() -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe("tiny-cgan", ["train.stpes=5"])
    message = str(error.value)
    assert "'train.stpes'" in message and "did you mean 'steps'" in message and "\n" not in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.steps=0", "steps must be >= 1"),
        ("train.steps=1.5", "expected an integer"),
        ("model.image_size=48", "power of two"),
        ("train.ema_decay=1.0", "ema_decay"),
        ("train.betas=[0.5]", "expected \\[float, float\\]"),
        ("train.algorithm=wgangp", "did you mean 'wgan-gp'"),
        ("train.loss=wasserstein", "Lipschitz"),
        ("train.diffaugment=['colour']", "did you mean 'color'"),
        ("data.hu_window=[100, -100]", "below"),
    ],
)
def test_bad_values(override: str, expected: str) -> None:
    with pytest.raises(RecipeError, match=expected):
        load_recipe("tiny-cgan", [override])


def test_algorithm_defaults_are_resolved() -> None:
    recipe = validate_recipe({"kind": "gan", "train": {"algorithm": "wgan-gp"}})
    assert recipe.train.betas == (0.0, 0.9) and recipe.train.n_critic == 5 and recipe.train.loss == "wasserstein"
    assert recipe.model.discriminator == "wgan-critic" and recipe.model.discriminator_normalization == "layer"
    cgan = validate_recipe({"kind": "gan"})
    assert cgan.train.betas == (0.5, 0.999) and cgan.model.discriminator == "projection-discriminator"
    with pytest.raises(RecipeError, match="wgan-critic"):
        validate_recipe({"kind": "gan", "train": {"algorithm": "wgan-gp"}, "model": {"discriminator": "projection-discriminator"}})
