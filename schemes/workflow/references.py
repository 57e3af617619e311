"""Reference models (DESIGN §6.1 rule 3): models independent of every claimant, which a judge also
verifies a claim on; when one of them passes, the claim proves nothing about the suspect.

A reference is reproducible: a named recipe, a seed, a data set (the community's split), an
architecture and an input shape fix its weights bit for bit on one software stack (single thread,
CPU), and its weights travel by hash. Each member trains its references itself and records the
hash it got; one counts once a majority recorded the same hash.

Recipes (choices of ours; the papers train no null models):

* `plain`: the architecture trained on the task with the clean recipe (Adam, lr 1e-3, batch 64):
  the null model of MTLSign, blind and function-coupled claims.
* `new-label`: the architecture with the extra class, watermarked by new label under a key of
  the community's (derived from the seed, never a claimant's): a model that *has* an output Δ,
  so a claim can't pass merely because noisy inputs make such models answer Δ.
* `passport`: the architecture's passport variant trained with T1 passports from a community key:
  a passport model that the claimant's passports must not unlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from schemes.data.community import community_data
from schemes.data.dataset import Dataset
from schemes.models._passport_layer import passport_layers, passport_shapes, t1_passports
from schemes.models.zoo import ModelCard, create_model
from schemes.training.loops import train_classifier
from schemes.watermarks import new_label, passport

RECIPES = ("plain", "new-label", "passport")


@dataclass(frozen=True)
class Recipe:
    """What fixes a reference's weights."""

    recipe: str
    arch: str
    dataset: str
    input_shape: tuple[int, int, int]
    seed: int = 1
    epochs: int = 15

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown reference recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        if not 1 <= self.epochs <= 1000 or self.seed < 0:
            raise ValueError("need 1 ≤ epochs ≤ 1000 and seed ≥ 0")


def community_key(recipe: Recipe) -> bytes:
    """A watermark key of the community's, for the recipes that embed one (no claimant holds it)."""
    return hashlib.sha256(f"wmnode/reference/{recipe.recipe}/{recipe.seed}".encode()).digest()


def _plain(model: nn.Module, data: Dataset, recipe: Recipe) -> None:
    train_classifier(
        model, data.x_train, data.y_train,
        epochs=recipe.epochs, lr=1e-3, batch_size=64, generator=torch.Generator().manual_seed(recipe.seed),
    )  # fmt: skip


def _new_label(model: nn.Module, data: Dataset, recipe: Recipe) -> None:
    new_label.train_on_key(model, data, community_key(recipe), new_label.Config(epochs=recipe.epochs, seed=recipe.seed))


def _passport(model: nn.Module, data: Dataset, recipe: Recipe) -> None:
    config = passport.Config(epochs=recipe.epochs, seed=recipe.seed)
    shapes = passport_shapes(model, data.x_test[:1])
    passports = t1_passports(community_key(recipe), config.version, shapes)
    passport.train_with_passports(model, data, passports, config)
    if not passport_layers(model):
        raise ValueError("the passport recipe needs a passport-variant architecture")


_BUILD: dict[str, tuple[Callable[[str], str], int, Callable[[nn.Module, Dataset, Recipe], None]]] = {
    "plain": (lambda arch: arch, 0, _plain),
    "new-label": (lambda arch: arch, 1, _new_label),
    "passport": (lambda arch: f"{arch}-passport", 0, _passport),
}


def expected_card(recipe: Recipe) -> tuple[str, int]:
    """The zoo architecture and number of classes a recipe's model has."""
    arch_of, extra, _ = _BUILD[recipe.recipe]
    return arch_of(recipe.arch), community_data(recipe.dataset, recipe.input_shape).num_classes + extra


def build_reference(recipe: Recipe) -> tuple[nn.Module, ModelCard]:
    """Train the reference `recipe` describes, on the CPU, single-threaded (bit-reproducible)."""
    arch_of, extra, train = _BUILD[recipe.recipe]
    data = community_data(recipe.dataset, recipe.input_shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = create_model(arch_of(recipe.arch), num_classes=data.num_classes + extra,
                                 input_shape=data.input_shape)  # fmt: skip
        train(model, data, recipe)
    finally:
        torch.set_num_threads(threads)
    card = ModelCard(
        arch_of(recipe.arch), data.num_classes + extra, data.input_shape, tuple(data.mean), tuple(data.std),
        {"reference": recipe.recipe, "seed": recipe.seed, "epochs": recipe.epochs, "dataset": recipe.dataset},
    )  # fmt: skip
    return model.eval(), card
