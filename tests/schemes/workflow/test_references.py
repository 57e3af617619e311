"""Reference models (schemes/workflow/references.py; their recipes: contracts/references.py; DESIGN §6.1
rule 3): each recipe builds the right model and card, bit for bit the same from the same recipe,
without touching the caller's RNG or threads."""

from __future__ import annotations

import pytest
import torch

from contracts.errors import ConfigError
from contracts.references import REFERENCE_RECIPES, ReferenceSpec
from schemes.data.community import community_data
from schemes.models.zoo import model_to_bytes
from schemes.workflow.references import build_reference, community_key

SHAPE = (1, 28, 28)
#: recipe -> (architecture on the card, number of classes): new label adds Δ, passport its variant.
EXPECTED = {"plain": ("lenet5", 10), "new-label": ("lenet5", 11), "passport": ("lenet5-passport", 10)}


def _recipe(name: str, seed: int = 1) -> ReferenceSpec:
    return ReferenceSpec(name, "lenet5", "digits", SHAPE, seed=seed, epochs=1)


def test_the_recipes_are_the_three_the_registry_knows() -> None:
    assert REFERENCE_RECIPES == tuple(EXPECTED)
    assert {name: (_recipe(name).model_arch, _recipe(name).slot[1]) for name in REFERENCE_RECIPES} == EXPECTED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"recipe": "fine-tuned"}, "unknown reference recipe 'fine-tuned'; known: plain, new-label, passport"),
        ({"epochs": 0}, "need 1 ≤ epochs ≤ 1000 and 0 ≤ seed ≤ 2\\^31"),
        ({"epochs": 1001}, "need 1 ≤ epochs ≤ 1000 and 0 ≤ seed ≤ 2\\^31"),
        ({"seed": -1}, "need 1 ≤ epochs ≤ 1000 and 0 ≤ seed ≤ 2\\^31"),
    ],
)
def test_a_bad_recipe_is_refused(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"recipe": "plain", "arch": "lenet5", "dataset": "digits", "input_shape": SHAPE}
    with pytest.raises(ConfigError, match=message):
        ReferenceSpec(**{**fields, **changes})  # type: ignore[arg-type]


def test_community_keys_differ_by_recipe_and_seed_and_are_stable() -> None:
    keys = {community_key(_recipe(name, seed)) for name in REFERENCE_RECIPES for seed in (1, 2)}
    assert len(keys) == 6 and all(len(k) == 32 for k in keys)
    assert community_key(_recipe("new-label")) == community_key(
        ReferenceSpec("new-label", "vgg16", "digits", (3, 32, 32))
    )


@pytest.mark.parametrize("name", REFERENCE_RECIPES)
def test_each_recipe_builds_its_card_and_is_bit_reproducible(name: str) -> None:
    data = community_data("digits", SHAPE)
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    model, card = build_reference(_recipe(name))
    assert torch.equal(torch.random.get_rng_state(), rng) and torch.get_num_threads() == threads
    arch, classes = EXPECTED[name]
    assert (card.arch, card.num_classes, card.input_shape) == (arch, classes, SHAPE)
    assert (card.mean, card.std) == (data.mean, data.std)
    assert card.extra == {"reference": name, "seed": 1, "epochs": 1, "dataset": "digits"}
    assert not model.training
    with torch.no_grad():
        assert model(data.x_test[:4]).shape == (4, classes)
    first = model_to_bytes(model, card)
    again, again_card = build_reference(_recipe(name))
    assert model_to_bytes(again, again_card) == first  # what lets a majority of members agree on a hash
    other, other_card = build_reference(_recipe(name, seed=2))
    assert model_to_bytes(other, other_card) != first
