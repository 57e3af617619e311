"""Reference models (DESIGN §6.1 rule 3): models independent of every claimant, which a judge also
verifies a claim on; when one of them passes, the claim proves nothing about the suspect.

A reference is reproducible: a named recipe, a seed, a data set (the community's split), an
architecture and an input shape fix its weights bit for bit on one software stack (single thread,
CPU), and its weights travel by hash. Each member trains its references itself and records the
hash it got; one counts once a majority recorded the same hash.

ReferenceSpecs (choices of ours; the papers train no null models):

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

import torch
from torch import nn

from contracts.references import ReferenceSpec
from schemes.data.community import community_data
from schemes.data.dataset import Dataset
from schemes.models._passport_layer import passport_layers, passport_shapes, t1_passports
from schemes.models.zoo import ModelCard, create_model
from schemes.training.loops import train_classifier
from schemes.watermarks import new_label, passport


def community_key(recipe: ReferenceSpec) -> bytes:
    """A watermark key of the community's, for the recipes that embed one (no claimant holds it)."""
    return hashlib.sha256(f"wmnode/reference/{recipe.recipe}/{recipe.seed}".encode()).digest()


def _plain(model: nn.Module, data: Dataset, recipe: ReferenceSpec) -> None:
    train_classifier(
        model, data.x_train, data.y_train,
        epochs=recipe.epochs, lr=1e-3, batch_size=64, generator=torch.Generator().manual_seed(recipe.seed),
    )  # fmt: skip


def _new_label(model: nn.Module, data: Dataset, recipe: ReferenceSpec) -> None:
    new_label.train_on_key(model, data, community_key(recipe), new_label.Config(epochs=recipe.epochs, seed=recipe.seed))


def _passport(model: nn.Module, data: Dataset, recipe: ReferenceSpec) -> None:
    config = passport.Config(epochs=recipe.epochs, seed=recipe.seed)
    shapes = passport_shapes(model, data.x_test[:1])
    passports = t1_passports(community_key(recipe), config.version, shapes)
    passport.train_with_passports(model, data, passports, config)
    if not passport_layers(model):
        raise ValueError("the passport recipe needs a passport-variant architecture")


#: How each recipe trains its model (the recipes and what they build: contracts.references).
_TRAIN: dict[str, Callable[[nn.Module, Dataset, ReferenceSpec], None]] = {
    "plain": _plain,
    "new-label": _new_label,
    "passport": _passport,
}


def expected_card(recipe: ReferenceSpec) -> tuple[str, int]:
    """The zoo architecture and number of classes a recipe's model has."""
    return recipe.model_arch, community_data(recipe.dataset, recipe.input_shape).num_classes + recipe.extra_classes


def build_reference(recipe: ReferenceSpec) -> tuple[nn.Module, ModelCard]:
    """Train the reference `recipe` describes, on the CPU, single-threaded (bit-reproducible)."""
    train, arch, extra = _TRAIN[recipe.recipe], recipe.model_arch, recipe.extra_classes
    data = community_data(recipe.dataset, recipe.input_shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = create_model(arch, num_classes=data.num_classes + extra,
                                 input_shape=data.input_shape)  # fmt: skip
        train(model, data, recipe)
    finally:
        torch.set_num_threads(threads)
    card = ModelCard(
        arch, data.num_classes + extra, data.input_shape, tuple(data.mean), tuple(data.std),
        {"reference": recipe.recipe, "seed": recipe.seed, "epochs": recipe.epochs, "dataset": recipe.dataset},
    )  # fmt: skip
    return model.eval(), card
