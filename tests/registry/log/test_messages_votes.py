"""Vote v2 (false-positive bound, reference models), reference messages and registry.bounds."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest

from contracts.bounds import BOUND_RE, binomial_tail, bound_text, chernoff_tail, false_positive_bound
from contracts.encoding import canonical
from contracts.errors import MessageError, VerificationError
from contracts.identity import Identity
from registry.log.messages import MAX_VOTE_REFERENCES, Reference, Vote, message_from_bytes, message_from_json

NODE = Identity.from_seed("bounds-messages-test-node")
REFS = tuple(hashlib.sha256(bytes([i])).hexdigest() for i in range(3))


def make_vote(**overrides: Any) -> Vote:
    fields: dict[str, Any] = {
        "claim": 7,
        "claim_hash": "ab" * 32,
        "verdict": "owner",
        "score": 990,
        "threshold": 700,
        "reason": "mtlsign watermark found",
        "fp_bound": "2.30e-09",
        "references": REFS,
        "controls": "8:120:0:1.40e-02",
        "model_id": "5a" * 32,
    }
    return Vote.create(NODE, **{**fields, **overrides})


def make_reference(identity: Identity = NODE, **overrides: Any) -> Reference:
    fields: dict[str, Any] = {
        "arch": "lenet5",
        "num_classes": 10,
        "input_shape": "1x28x28",
        "dataset": "digits",
        "recipe": "plain",
        "seed": 1,
        "model_hash": "cd" * 32,
    }
    return Reference.create(identity, **{**fields, **overrides})


# --------------------------------------------------------------------------------------------
# Vote v3


def test_a_v3_vote_round_trips_through_its_canonical_bytes() -> None:
    vote = make_vote()
    obj = vote.to_json()
    assert (obj["type"], obj["v"], obj["fp_bound"], obj["references"]) == ("vote", 3, "2.30e-09", ",".join(REFS))
    assert obj["controls"] == "8:120:0:1.40e-02"
    assert set(obj) == {"type", "v", "node", "claim", "claim_hash", "verdict", "score", "threshold", "reason",
                        "fp_bound", "references", "controls", "model_id", "sig"}  # fmt: skip
    assert message_from_json(obj) == vote and Vote.from_json(obj) == vote
    again = message_from_bytes(vote.canonical_bytes())
    assert again == vote and again.canonical_bytes() == vote.canonical_bytes()
    assert vote.canonical_bytes() == canonical(obj)
    NODE.public_key.verify(bytes.fromhex(vote.sig), canonical(vote.signed_part()))


def test_a_vote_without_references_carries_an_empty_list_and_the_weakest_bound_by_default() -> None:
    vote = Vote.create(NODE, claim=1, claim_hash="ab" * 32, verdict="error", score=0, threshold=0, reason="")
    assert (vote.fp_bound, vote.references) == ("1.00e+00", "")
    assert message_from_bytes(vote.canonical_bytes()) == vote


def test_sixteen_references_fit_in_a_vote() -> None:
    refs = tuple(hashlib.sha256(bytes([i])).hexdigest() for i in range(MAX_VOTE_REFERENCES))
    vote = make_vote(references=refs)
    assert message_from_bytes(vote.canonical_bytes()).references.split(",") == list(refs)


@pytest.mark.parametrize("field", ["fp_bound", "references"])
def test_tampering_a_new_field_breaks_the_signature(field: str) -> None:
    obj = make_vote().to_json()
    obj[field] = "1.00e-30" if field == "fp_bound" else REFS[0]
    Vote.from_json(obj)  # still well formed
    with pytest.raises(VerificationError, match="vote: signature does not match node"):
        message_from_json(obj)


@pytest.mark.parametrize(
    "bound",
    ["1e-9", "2.3e-09", "2.30E-09", "2.30e-9", "2.300e-09", "0.0000000023", "23.0e-10", "nan", "inf", "", " 2.30e-09",
     "2.30e-09 ", "-2.30e-09", "2.30e-0009", 2.3e-9, 0, None, ["2.30e-09"]],
)  # fmt: skip
def test_bad_fp_bounds_are_refused(bound: object) -> None:
    obj = {**make_vote().to_json(), "fp_bound": bound}
    with pytest.raises(MessageError, match=r"field 'fp_bound' must be a decimal string like '2\.30e-09'"):
        Vote.from_json(obj)
    with pytest.raises(MessageError, match="field 'fp_bound'|floats are not allowed in messages"):
        make_vote(fp_bound=bound)  # a float is refused even before the field is checked


@pytest.mark.parametrize(
    ("refs", "fragment"),
    [
        (REFS[0].upper(), "must be comma-separated SHA-256 hex digests"),
        (REFS[0][:-2], "must be comma-separated SHA-256 hex digests"),
        (REFS[0] + ",", "must be comma-separated SHA-256 hex digests"),
        ("," + REFS[0], "must be comma-separated SHA-256 hex digests"),
        (f"{REFS[0]}, {REFS[1]}", "must be comma-separated SHA-256 hex digests"),
        (f"{REFS[0]};{REFS[1]}", "must be comma-separated SHA-256 hex digests"),
        ("sha256:" + REFS[0], "must be comma-separated SHA-256 hex digests"),
        (",".join([REFS[0]] * (MAX_VOTE_REFERENCES + 1)), "must name at most 16 reference models"),
        ("a" * 5000, "must name at most 16 reference models"),
        (list(REFS), "must name at most 16 reference models"),
        (None, "must name at most 16 reference models"),
    ],
)
def test_bad_reference_lists_are_refused(refs: object, fragment: str) -> None:
    obj = {**make_vote().to_json(), "references": refs}
    with pytest.raises(MessageError, match=f"field 'references' {fragment}"):
        Vote.from_json(obj)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda o: o.update(v=1), "field 'v' must be 3 for 'vote'"),
        (lambda o: o.update(v=True), "field 'v' must be 3 for 'vote'"),
        (lambda o: o.pop("fp_bound"), r"missing field\(s\) in 'vote': fp_bound"),
        (lambda o: [o.pop("fp_bound"), o.pop("references"), o.update(v=1)], "field 'v' must be 3"),  # a v1 vote
        (lambda o: [o.pop("controls"), o.update(v=2)], "field 'v' must be 3"),  # a v2 vote
        (lambda o: o.pop("controls"), r"missing field\(s\) in 'vote': controls"),
        (lambda o: o.update(bound="2.30e-09"), r"unknown field\(s\) in 'vote': bound"),
        (lambda o: o.update(controls="8:1200:0:1.00e+00"), "field 'controls' must be empty or 'COUNT:MAX:NEAR:RATE'"),
        (lambda o: o.update(controls="0:0:0:1.00e+00"), "field 'controls' must be empty or"),
        (lambda o: o.update(controls="8:120:0:0.014"), "field 'controls' must be empty or"),
        (lambda o: o.update(model_id="5A" * 32), "field 'model_id' must be empty or a SHA-256 hex digest"),
    ],
)
def test_a_vote_of_an_earlier_version_or_with_bad_control_figures_is_refused(mutate: Any, fragment: str) -> None:
    obj = make_vote().to_json()
    mutate(obj)
    with pytest.raises(MessageError, match=fragment):
        message_from_json(obj)


# --------------------------------------------------------------------------------------------
# Reference


def test_a_reference_round_trips_through_its_canonical_bytes() -> None:
    ref = make_reference()
    obj = ref.to_json()
    assert (obj["type"], obj["v"], obj["node"]) == ("reference", 1, NODE.public_hex)
    assert message_from_json(obj) == ref and Reference.from_json(obj) == ref
    again = message_from_bytes(ref.canonical_bytes())
    assert again == ref and again.canonical_bytes() == ref.canonical_bytes()
    assert ref.slot == ("lenet5", 10, "1x28x28", "digits", "plain")
    assert ref.signer == NODE.public_hex


def test_a_reference_signed_by_another_node_is_refused() -> None:
    obj = {**make_reference(Identity.generate()).to_json(), "node": NODE.public_hex}  # speaking for NODE
    with pytest.raises(VerificationError, match="reference: signature does not match node"):
        message_from_json(obj)
    forged = {**make_reference().to_json(), "model_hash": "ee" * 32}
    with pytest.raises(VerificationError, match="reference: signature does not match node"):
        message_from_json(forged)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("input_shape", "28x28", "field 'input_shape' must be CxHxW, like '1x28x28'"),
        ("input_shape", "1x28x28x3", "field 'input_shape' must be CxHxW"),
        ("input_shape", "0x28x28", "field 'input_shape' must be CxHxW"),
        ("input_shape", "1x28x99999", "field 'input_shape' must be CxHxW"),
        ("input_shape", [1, 28, 28], "field 'input_shape' must be CxHxW"),
        ("arch", "LeNet5", "field 'arch' must be a short lowercase name"),
        ("arch", "../lenet5", "field 'arch' must be a short lowercase name"),
        ("dataset", "a" * 65, "field 'dataset' must be a short lowercase name"),
        ("recipe", "", "field 'recipe' must be a short lowercase name"),
        ("num_classes", 0, "field 'num_classes' must be 1-100000"),
        ("num_classes", 100_001, "field 'num_classes' must be 1-100000"),
        ("num_classes", "10", "field 'num_classes' must be an integer"),
        ("seed", -1, "field 'seed' is out of range"),
        ("model_hash", "CD" * 32, "field 'model_hash' must be 32 bytes of lowercase hex"),
        ("model_hash", "cd" * 31, "field 'model_hash' must be 32 bytes"),
    ],
)
def test_references_with_bad_fields_are_refused_naming_the_field(field: str, value: object, fragment: str) -> None:
    obj = {**make_reference().to_json(), field: value}
    with pytest.raises(MessageError, match=fragment):
        Reference.from_json(obj)


def test_reference_create_validates_its_arguments() -> None:
    with pytest.raises(MessageError, match="field 'input_shape' must be CxHxW"):
        make_reference(input_shape="1x28")


# --------------------------------------------------------------------------------------------
# Bounds


def test_the_binomial_tail_is_exact_on_small_cases() -> None:
    assert binomial_tail(10, 10, 0.5) == pytest.approx(2**-10)
    assert binomial_tail(10, 9, 0.5) == pytest.approx(11 / 1024)
    assert binomial_tail(3, 2, 0.1) == pytest.approx(3 * 0.01 * 0.9 + 0.001)
    assert (binomial_tail(10, 0, 0.3), binomial_tail(10, 11, 0.3), binomial_tail(10, 5, 0.0)) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(("n", "k", "p"), [(100, 70, 0.5), (600, 420, 0.5), (90, 81, 0.1), (200, 100, 0.3)])
def test_chernoff_bounds_the_binomial_tail_from_above(n: int, k: int, p: float) -> None:
    exact, chernoff = binomial_tail(n, k, p), chernoff_tail(n, k, p)
    assert 0 < exact <= chernoff < 1


def test_the_mtlsign_bound_at_the_floor_is_tiny_and_a_one_percent_bar_proves_nothing() -> None:
    at_floor = false_positive_bound("chernoff", 600, 0.7, 0.5)
    assert at_floor < 1e-20
    assert false_positive_bound("binomial", 100, 0.01, 0.1) == pytest.approx(1 - 0.9**100)
    assert false_positive_bound("binomial", 100, 0.25, 0.1) < 1e-3
    with pytest.raises(ValueError, match="unknown bound 'gaussian'; known: binomial, chernoff"):
        false_positive_bound("gaussian", 10, 0.5, 0.5)


@pytest.mark.parametrize("value", [1.0, 0.5, 2.3e-9, 1e-300, 5e-324, 0.0, 7.0, -1.0])
def test_bound_text_always_matches_what_a_vote_accepts(value: float) -> None:
    text = bound_text(value)
    assert BOUND_RE.fullmatch(text), text
    assert float(text) == pytest.approx(min(1.0, max(0.0, value)), rel=1e-2)
    assert make_vote(fp_bound=text).fp_bound == text
    assert bound_text(2.3e-9) == "2.30e-09"


def test_an_unknown_bound_is_never_written_as_certainty() -> None:
    assert bound_text(math.nan) == "1.00e+00"
