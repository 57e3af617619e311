"""Nodes started without judges (`wmnode start --no-judges`, what the cluster tests run): every route
answers, /v1/status says the node is not ready to judge, and a claim is decided `error` with the
reason in every vote instead of waiting on a verdict that never comes."""

from __future__ import annotations

import time

import httpx
import pytest

from contracts.identity import Identity
from registry.client.localnet import LocalCommunity
from registry.serve.verifier import NO_JUDGES_REASON
from tests.contracts.artifacts import artifact_with_card
from tests.helpers import PublishFactory
from tests.registry.serve.test_api import MTLSIGN_INFO, SUSPECT_CARD, claim_on, json_bytes

pytestmark = pytest.mark.cluster


def test_nodes_without_judges_answer_every_route_and_decide_a_claim_error_naming_why(
    shared_community: LocalCommunity, make_publish: PublishFactory, owner: Identity
) -> None:
    community = shared_community
    for status in community.wait_converged():
        assert status is not None
        assert (status["verifier_ready"], status["references_ready"]) == (False, True)  # no references configured
    suspect = artifact_with_card(SUSPECT_CARD)
    with httpx.Client(base_url=community.nodes[0].url, timeout=10) as client:
        claim = claim_on(client, make_publish, owner, json_bytes(MTLSIGN_INFO), suspect)
        reply = client.post("/v1/entries", content=claim.canonical_bytes())
        assert reply.status_code == 201, reply.text
        index = reply.json()["index"]
        deadline = time.monotonic() + 30
        while len((status := client.get(f"/v1/claims/{index}").json())["votes"]) < len(community.nodes):
            assert time.monotonic() < deadline, f"not every node voted on claim #{index}: {status}"
            time.sleep(0.05)
    assert (status["decided"], status["result"]) == ("error", "error")
    assert [v["msg"]["verdict"] for v in status["votes"]] == ["error"] * len(community.nodes)
    assert {v["msg"]["reason"] for v in status["votes"]} == {NO_JUDGES_REASON}
    assert "--no-judges" in NO_JUDGES_REASON

    size = community.wait_converged()[0]["size"]  # type: ignore[index]
    key_hash = status["publish"]["msg"]["key_hash"]
    for node in community.nodes:
        with httpx.Client(base_url=node.url, timeout=10) as client:
            for path, code in [
                ("/v1/status", 200), ("/v1/entries", 200), (f"/v1/entries/{index}", 200), ("/v1/references", 200),
                ("/v1/checkpoint", 200), ("/checkpoint", 200), (f"/v1/publishes/{key_hash}", 200),
                (f"/v1/claims/{index}", 200), (f"/v1/owner?model_hash={claim.model_hash}", 404),
                (f"/v1/artifacts/{claim.model_hash}", 200 if node is community.nodes[0] else 404),  # never fetched
                (f"/v1/proof/inclusion?index={index}&size={size}", 200),
                (f"/v1/proof/consistency?first=1&second={size}", 200), (f"/v1/root?size={size}", 200),
                ("/metrics", 200),
            ]:  # fmt: skip
                reply = client.get(path)
                assert reply.status_code == code, (node.config.name, path, reply.text)
            if node is community.nodes[0]:
                assert client.get(f"/v1/artifacts/{claim.model_hash}").content == suspect
            assert "wmnode_claim_queue 0.0" in client.get("/metrics").text  # nothing left waiting on a verdict
