"""A model named by what defines its function (registry.modelid, DESIGN §4.4), and decisions keyed by it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from contracts.errors import MessageError
from contracts.identity import Identity
from contracts.modelid import model_identity, model_identity_of
from registry.cli.ownership import model_name
from schemes.models.zoo import ModelCard, create_model, model_to_bytes, save_model
from tests.contracts.artifacts import artifact_with_card, safetensors_bytes
from tests.registry.log.test_state import MEMBERS, StateLog, claim, publish, submit
from tests.registry.log.test_state import log as log  # noqa: F401 - the fixture, used by name

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lenet5", num_classes=10, input_shape=SHAPE)


def card(**changes: object) -> ModelCard:
    fields: dict[str, object] = {"arch": "lenet5", "num_classes": 10, "input_shape": SHAPE, "mean": (0.5,),
                                 "std": (0.5,), "extra": {}}  # fmt: skip
    return ModelCard(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_recarded_copy_is_the_same_model_and_a_renormalised_one_is_not(lenet: torch.nn.Module) -> None:
    original = model_identity_of(model_to_bytes(lenet, card()))
    # A thief's copies: LeNet-5 builds the same weights at 1×29×29; free fields and label names.
    for copy in (card(input_shape=(1, 29, 29)), card(extra={"labels": list("abcdefghij"), "note": "mine"})):
        data = model_to_bytes(lenet, copy)
        assert data != model_to_bytes(lenet, card())  # another artifact hash ...
        assert model_identity_of(data) == original  # ... the same model
    assert model_identity_of(model_to_bytes(lenet, card(mean=(0.0,)))) != original  # a squatter's normalisation
    assert model_identity_of(model_to_bytes(lenet, card(std=(0.25,)))) != original
    changed = create_model("lenet5", num_classes=10, input_shape=SHAPE)
    changed.load_state_dict(lenet.state_dict())
    with torch.no_grad():
        changed.head.bias[0] += 1e-3
    assert model_identity_of(model_to_bytes(changed, card())) != original


def test_the_tensors_order_in_the_file_does_not_matter() -> None:
    meta = {"format": "pt", "wmnode.card": json.dumps({**card().to_json()})}
    a, b = struct.pack("<f", 1.0), struct.pack("<f", 2.0)
    one = safetensors_bytes({"__metadata__": meta, "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                             "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, a + b)  # fmt: skip
    other = safetensors_bytes({"__metadata__": meta, "y": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                               "x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b + a)  # fmt: skip
    assert one != other and model_identity_of(one) == model_identity_of(other)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x01", "not a safetensors file"),
        (struct.pack("<Q", 2**40) + b"{}", "header is malformed"),
        (safetensors_bytes([1]), "not a JSON object"),
        (artifact_with_card({"arch": "lenet5", "mean": ["x"], "std": [0.5]}), "malformed normalisation"),
        (safetensors_bytes({"__metadata__": {}}), "carries no model card"),
        (safetensors_bytes({"__metadata__": {"wmnode.card": "{}"}, "w": {"dtype": "F32", "shape": [1],
                                                                         "data_offsets": [0, 64]}}), "ends before"),
        (safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}), "'w' is malformed"),
    ],
)  # fmt: skip
def test_a_malformed_artifact_is_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        model_identity_of(data)


def test_a_local_model_is_named_as_a_node_names_its_artifact(lenet: torch.nn.Module, tmp_path: Path) -> None:
    save_model(lenet, card(input_shape=(1, 29, 29)), tmp_path / "stolen")
    (tmp_path / "artifact").write_bytes(model_to_bytes(lenet, card()))
    assert model_name(str(tmp_path / "stolen")) == model_identity(tmp_path / "artifact")


def test_the_standing_owner_of_every_copy_is_the_owner_of_the_model(log: StateLog) -> None:  # noqa: F811 - the fixture
    """The owner's claim on a re-carded copy (its own artifact hash) decides the model: the original
    artifact, the copy and the function identity all name the same standing owner."""
    from registry.log.messages import Vote

    owner = Identity.generate()
    index, key, proof = publish(log, owner)
    copy, original, function = "c0" * 32, "0c" * 32, "f1" * 32
    _, c, _ = submit(log, claim(owner, index, key, proof, copy))
    for member in MEMBERS[:2]:
        submit(log, Vote.create(member, claim=c, claim_hash=log.state.claims[c].body_hash, verdict="owner", score=990,
                                threshold=700, reason="test", model_id=function))  # fmt: skip
    assert log.state.claims[c].model_id == function
    for name in (copy, function):
        standing = log.standing_owner(name)
        assert standing is not None and (standing["owner"], standing["model_id"]) == (owner.public_hex, function)
    assert log.standing_owner(original) is None  # a node cannot name an artifact it never read: the client can
