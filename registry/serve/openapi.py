"""The node's OpenAPI document (`/openapi.json`): every route's answers and refusals, and the fast path's.

FastAPI documents the routes from their response models (registry.serve.schemas); this module adds
what FastAPI cannot see. Every refusal is `{"error", "detail"}` JSON with the status of its error
class (contracts.errors), whatever the route answers when it succeeds; a parameter that does not
parse is a 400, as everything malformed is, never FastAPI's 422; and `POST /v1/entries`, which the
publish fast path answers in front of FastAPI's routing, is declared with its body and answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from registry.serve import schemas

__all__ = ["OCTETS", "REFUSALS", "openapi_document", "refusals"]

_REF = "#/components/schemas/{model}"
#: What each refusal means; every one is answered `{"error": <class>, "detail": <why>}`.
REFUSALS = {
    400: "MessageError or VerificationError: a malformed parameter, message or upload, or a bad signature",
    404: "NotFoundError: no such entry, claim, publish, owner, artifact or tree size (yet)",
    409: "RejectedError: the log refused a well-formed message (backdated, key already published, ...)",
    413: "PayloadTooLargeError: a message or upload over its size limit",
    429: "RateLimitedError: this client is over its rate limit; retry-after says when to try again",
    503: "UnavailableError: the community cannot commit now (no leader, no quorum, a commit timed out)",
    507: "QuotaExceededError: the store has no room for the upload",
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route may answer; every route may answer 429 (the read gate meters them all)."""
    return {code: {"model": schemas.ErrorAnswer, "description": REFUSALS[code]} for code in sorted({*codes, 429})}


#: An artifact's bytes, uploaded (`PUT /v1/artifacts/{digest}`) and downloaded as they are.
OCTETS = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document of the routes, as the node answers them: without FastAPI's 422 answers
    (a parameter that does not parse is a 400 here, as every MessageError), every refusal as JSON,
    and with `POST /v1/entries`, which the fast path answers before any routing."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        refusal = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorAnswer")}}}
        for operations in doc["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                for code, response in operation["responses"].items():
                    if code >= "400":  # JSON, whatever the route answers when it succeeds (text, bytes)
                        response["content"] = refusal
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        doc["paths"].setdefault("/v1/entries", {})["post"] = _submit_operation(components)
        app.openapi_schema = doc
    return app.openapi_schema


def _submit_operation(components: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/entries` as an OpenAPI operation (its schemas join `components`)."""
    _, defs = models_json_schema(
        [
            (schemas.SignedMessage, "validation"),
            (schemas.Submitted, "serialization"),
            (schemas.ErrorAnswer, "serialization"),
        ],
        ref_template=_REF,
    )
    for name, schema in defs.get("$defs", {}).items():
        components.setdefault(name, schema)

    def answer(model: str, description: str) -> dict[str, Any]:
        schema = {"$ref": _REF.format(model=model)}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    return {
        "summary": "Submit a signed message",
        "description": "Validate a signed message (publish, claim, vote or reference), commit it through Raft "
        "and answer where it is in the log. A message already in the log is answered with its index.",
        "operationId": "submit_entry",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="SignedMessage")}}},
        },
        "responses": {
            "201": answer("Submitted", "appended: the message is new in the log"),
            "200": answer("Submitted", "duplicate: the message was in the log already"),
            **{str(code): answer("ErrorAnswer", REFUSALS[code]) for code in (400, 409, 413, 429, 503)},
        },
    }
