"""Public checkpoints as reference models (DESIGN §6.1 rule 3): admitted by hash, matched by architecture."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.errors import RejectedError
from contracts.infos import check_against_card, parse_info
from contracts.references import CHECKPOINT
from registry.serve.claim_inputs import reference_matches
from tests.contracts.test_infos import info
from tests.registry.log.test_state import APPENDED, MEMBERS, StateLog, reference, submit
from tests.registry.log.test_state import log as log  # noqa: F401 - the fixture, used by name

PARENT = "ab" * 32
TIMM = {"arch": "timm:resnet18", "num_classes": 11, "input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}


def checkpoint(model_hash: str = PARENT, **changes: Any) -> dict[str, Any]:
    ref = {"arch": "timm:resnet18", "num_classes": 1000, "input_shape": "3x224x224", "dataset": model_hash,
           "recipe": CHECKPOINT, "model_hash": model_hash, "members": 2}  # fmt: skip
    return {**ref, **changes}


def open_info(scheme: str) -> Any:
    return parse_info(scheme, {**info(scheme), "input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3})


def test_a_checkpoint_is_admitted_by_a_majority_and_opens_mtlsign_on_its_architecture(log: StateLog) -> None:  # noqa: F811 - the fixture
    mtl = open_info("mtlsign")
    with pytest.raises(RejectedError, match="has admitted no public checkpoint of it as a reference"):
        check_against_card(mtl, TIMM, checkpoints=log.state.checkpoint_archs())
    fields = {"arch": "timm:resnet18", "num_classes": 1000, "input_shape": "3x224x224", "dataset": PARENT,
              "recipe": CHECKPOINT, "seed": 0}  # fmt: skip
    assert submit(log, reference(MEMBERS[0], PARENT, **fields))[0] == APPENDED
    assert log.state.checkpoint_archs() == frozenset()  # one member is not a majority
    assert submit(log, reference(MEMBERS[1], PARENT, **fields))[0] == APPENDED
    assert log.state.checkpoint_archs() == {"timm:resnet18"}
    check_against_card(mtl, TIMM, checkpoints=log.state.checkpoint_archs())
    # Another checkpoint of the same architecture is a slot of its own: a member records both.
    other = {**fields, "dataset": "cd" * 32}
    assert submit(log, reference(MEMBERS[0], "cd" * 32, **other))[0] == APPENDED


@pytest.mark.parametrize(
    ("scheme", "card", "matches"),
    [
        ("mtlsign", TIMM, True),  # white-box: the architecture, whatever its head and shape
        ("passport", {**TIMM, "arch": "timm:resnet18-passport"}, True),
        ("mtlsign", {**TIMM, "arch": "timm:resnet34"}, False),
        ("new-label", TIMM, False),  # black-box: the suspect's classes (11 here, the checkpoint's 1000)
        ("new-label", {**TIMM, "num_classes": 1000}, True),
        ("function-coupled", None, False),  # an API claiming 10 classes
    ],
)
def test_a_checkpoint_matches_by_architecture_for_white_box_and_by_classes_for_black_box(
    scheme: str, card: dict[str, Any] | None, matches: bool
) -> None:
    assert reference_matches(checkpoint(), open_info(scheme), card) is matches
    assert reference_matches(checkpoint(num_classes=10), open_info("function-coupled"), None)
