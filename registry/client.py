"""HTTP client for a node's API (httpx), translating errors into the wmnode error tree."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from registry.errors import UnavailableError, VerificationError, error_class
from registry.messages import Message


class NodeClient:
    """A thin, typed wrapper over one node's API. Use as a context manager or call `close()`."""

    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"cannot reach node {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                name, detail = body.get("error", ""), body.get("detail", response.text)
            except ValueError:
                name, detail = "", response.text
            raise error_class(str(name))(f"{detail} (HTTP {response.status_code} from {self.url}{path})")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def submit(self, msg: Message) -> dict[str, Any]:
        """POST a signed message; returns index, time, leaf_hash and status (appended/duplicate)."""
        return self.post_raw(msg.canonical_bytes())  # type: ignore[no-any-return]

    def post_raw(self, body: bytes) -> Any:
        return self._json("POST", "/v1/entries", content=body, headers={"content-type": "application/json"})

    def status(self) -> dict[str, Any]:
        return self._json("GET", "/v1/status")  # type: ignore[no-any-return]

    def entry(self, index: int) -> dict[str, Any]:
        return self._json("GET", f"/v1/entries/{index}")  # type: ignore[no-any-return]

    def entries(self, start: int | None = None, limit: int = 20) -> dict[str, Any]:
        params: dict[str, int] = {"limit": limit}
        if start is not None:
            params["start"] = start
        return self._json("GET", "/v1/entries", params=params)  # type: ignore[no-any-return]

    def checkpoint(self, size: int | None = None) -> dict[str, Any]:
        params = {} if size is None else {"size": size}
        return self._json("GET", "/v1/checkpoint", params=params)  # type: ignore[no-any-return]

    def publish_by_key(self, key_hash: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/publishes/{key_hash}")  # type: ignore[no-any-return]

    def claim(self, index: int) -> dict[str, Any]:
        """A claim with its publish, votes, decision and the standing owner of its model."""
        return self._json("GET", f"/v1/claims/{index}")  # type: ignore[no-any-return]

    def owner(self, model_hash: str) -> dict[str, Any]:
        return self._json("GET", "/v1/owner", params={"model_hash": model_hash})  # type: ignore[no-any-return]

    def references(self) -> dict[str, Any]:
        """The reference models a majority of the members recorded."""
        return self._json("GET", "/v1/references")  # type: ignore[no-any-return]

    def put_artifact(self, data: bytes) -> str:
        """Upload bytes to the node's artifact store; returns their `sha256:<hex>` URI."""
        digest = hashlib.sha256(data).hexdigest()
        self._request(
            "PUT", f"/v1/artifacts/{digest}", content=data, headers={"content-type": "application/octet-stream"}
        )
        return f"sha256:{digest}"

    def get_artifact(self, digest: str) -> bytes:
        data = self._request("GET", f"/v1/artifacts/{digest}").content
        if hashlib.sha256(data).hexdigest() != digest:
            raise VerificationError(f"node {self.url} sent bytes that do not hash to {digest[:16]}…")
        return data

    def checkpoint_note(self) -> str:
        return self._request("GET", "/checkpoint").text

    def inclusion(self, index: int, size: int) -> dict[str, Any]:
        return self._json("GET", "/v1/proof/inclusion", params={"index": index, "size": size})  # type: ignore[no-any-return]

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        return self._json("GET", "/v1/proof/consistency", params={"first": first, "second": second})  # type: ignore[no-any-return]
