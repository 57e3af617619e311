from __future__ import annotations

import json

import pytest

from contracts.encoding import canonical
from contracts.errors import MessageError, VerificationError
from contracts.identity import Identity
from registry.log.messages import Publish, message_from_bytes, message_from_json
from tests.helpers import PublishFactory


def test_publish_round_trips(make_publish: PublishFactory) -> None:
    msg = make_publish()
    again = message_from_bytes(msg.canonical_bytes())
    assert again == msg
    assert again.canonical_bytes() == msg.canonical_bytes()
    assert set(msg.to_json()) == {
        "type",
        "v",
        "scheme",
        "time",
        "key_hash",
        "verifier_hash",
        "info_hash",
        "owner",
        "nonce",
        "sig",
    }


def test_signature_is_over_canonical_bytes_without_sig(make_publish: PublishFactory, owner: Identity) -> None:
    msg = make_publish()
    body = msg.to_json()
    del body["sig"]
    owner.public_key.verify(bytes.fromhex(msg.sig), canonical(body))


def test_formatting_does_not_matter(make_publish: PublishFactory) -> None:
    msg = make_publish()
    pretty = json.dumps(msg.to_json(), indent=4).encode()
    assert message_from_bytes(pretty) == msg


@pytest.mark.parametrize("field", ["time", "key_hash", "scheme", "nonce", "info_hash", "verifier_hash"])
def test_tampering_any_field_breaks_the_signature(make_publish: PublishFactory, field: str) -> None:
    obj = make_publish().to_json()
    if field == "time":
        obj[field] += 1
    elif field == "scheme":
        obj[field] = "passport"
    else:
        obj[field] = "00" * (len(obj[field]) // 2)
    with pytest.raises(VerificationError, match="signature does not match owner"):
        message_from_json(obj)


def test_a_signature_by_someone_else_fails(make_publish: PublishFactory) -> None:
    obj = make_publish().to_json()
    obj["owner"] = Identity.generate().public_hex
    with pytest.raises(VerificationError, match="signature does not match"):
        message_from_json(obj)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda o: o.update(extra=1), "unknown field.*extra"),
        (lambda o: o.pop("nonce"), "missing field.*nonce"),
        (lambda o: o.update(time="123"), "'time' must be an integer"),
        (lambda o: o.update(time=True), "'time' must be an integer"),
        (lambda o: o.update(time=-1), "'time' is out of range"),
        (lambda o: o.update(time=2**60), "'time' is out of range"),
        (lambda o: o.update(key_hash="XY" * 32), "'key_hash' must be 32 bytes of lowercase hex"),
        (lambda o: o.update(key_hash="ab" * 31), "'key_hash' must be 32 bytes"),
        (lambda o: o.update(key_hash=7), "'key_hash' must be a lowercase hex string"),
        (lambda o: o.update(nonce="ab" * 4), "'nonce' must be 16-64 bytes"),
        (lambda o: o.update(scheme="MTL Sign"), "'scheme' must be a lowercase name"),
        (lambda o: o.update(sig="00"), "'sig' must be 64 bytes"),
        (lambda o: o.update(v=2), "'v' must be 1"),
        (lambda o: o.update(type="ballot"), "unknown message type 'ballot'"),
    ],
)
def test_malformed_publish_is_refused_with_a_clear_message(make_publish: PublishFactory, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    obj = make_publish().to_json()
    mutate(obj)
    with pytest.raises(MessageError, match=fragment):
        message_from_json(obj)


def test_a_non_object_is_refused() -> None:
    with pytest.raises(MessageError, match="must be a JSON object"):
        message_from_json([1, 2])


def test_create_validates_its_arguments(owner: Identity) -> None:
    with pytest.raises(MessageError, match="'info_hash'"):
        Publish.create(
            owner,
            scheme="mtlsign",
            time=1,
            key_hash="ab" * 32,
            verifier_hash="ab" * 32,
            info_hash="nothex",
            nonce="ab" * 16,
        )


def test_body_hash_ignores_nothing_but_sig(make_publish: PublishFactory) -> None:
    a, b = make_publish(), make_publish()
    assert a.body_hash() != b.body_hash()
    assert a.body_hash() == message_from_json(a.to_json()).body_hash()
