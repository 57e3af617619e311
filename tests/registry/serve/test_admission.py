"""Claim admission's rules, in the one place the API and every verifier take them from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from contracts.bundle import MAX_INFO_BYTES, MAX_VERIFIER_BYTES
from contracts.errors import RejectedError
from contracts.identity import Identity, derive_owner_key
from contracts.infos import DEFAULT_POLICY
from registry.log.messages import Claim
from registry.serve.admission import check_published_artifacts, check_verifier_file, info_bytes, read_info
from tests.registry.serve.test_api import MTLSIGN_INFO, json_bytes

INFO, VERIFIER = hashlib.sha256(b"info").hexdigest(), hashlib.sha256(b"verifier").hexdigest()


def _claim(info_uri: str, verifier_uri: str) -> Claim:
    owner = Identity.generate()
    key = derive_owner_key(owner, b"\x01" * 16)
    model = "ab" * 32
    return Claim.create(owner, publish=0, model_uri=f"sha256:{model}", model_hash=model, verifier_uri=verifier_uri,
                        info_uri=info_uri, key=key.key, key_proof=key.key_proof, time=1)  # fmt: skip


def test_an_info_is_read_up_to_its_limit_and_refused_past_it(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    path.write_bytes(json_bytes(MTLSIGN_INFO))
    assert read_info("mtlsign", info_bytes(path), DEFAULT_POLICY).SCHEME == "mtlsign"
    path.write_bytes(b" " * MAX_INFO_BYTES)
    assert len(info_bytes(path)) == MAX_INFO_BYTES
    path.write_bytes(b" " * (10 * MAX_INFO_BYTES))
    with pytest.raises(RejectedError, match=f"^the info is over {MAX_INFO_BYTES} bytes$"):
        info_bytes(path)


def test_a_verifier_over_its_limit_is_refused_before_its_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "verifier.safetensors"
    with path.open("wb") as handle:
        handle.truncate(MAX_VERIFIER_BYTES + 1)  # sparse: no disk is used
    info = read_info("mtlsign", json_bytes(MTLSIGN_INFO), DEFAULT_POLICY)
    with pytest.raises(RejectedError, match=f"^the verifier artifact is over {MAX_VERIFIER_BYTES} bytes$"):
        check_verifier_file(info, path)


def test_a_claim_names_the_info_and_verifier_its_publish_committed_to() -> None:
    check_published_artifacts(_claim(f"sha256:{INFO}", f"sha256:{VERIFIER}"), INFO, VERIFIER)
    check_published_artifacts(
        _claim("https://example.org/info", "https://example.org/v"), INFO, VERIFIER
    )  # checked on arrival
    with pytest.raises(RejectedError, match=r"^claim: info_uri is not the info its publish names \(info_hash\)$"):
        check_published_artifacts(_claim(f"sha256:{VERIFIER}", f"sha256:{VERIFIER}"), INFO, VERIFIER)
    with pytest.raises(RejectedError, match=r"^claim: verifier_uri is not the verifier artifact its publish names"):
        check_published_artifacts(_claim(f"sha256:{INFO}", f"sha256:{INFO}"), INFO, VERIFIER)
