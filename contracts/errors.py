"""The one error tree of wmnode: every failure a user can see is a `WmnodeError`."""

from __future__ import annotations


class WmnodeError(Exception):
    """Base of every error wmnode raises on purpose.

    `diagnostics()` is what the CLI prints and the API returns as `detail`; subclasses set
    `http_status` so the API maps the whole tree through one table.
    """

    http_status = 500

    def diagnostics(self) -> str:
        return str(self) or self.__class__.__name__


class ConfigError(WmnodeError):
    """A node config, CLI option or environment value is invalid."""

    http_status = 400


class IdentityError(WmnodeError):
    """A key file is missing, unreadable, has the wrong permissions or passphrase."""

    http_status = 400


class MessageError(WmnodeError):
    """A message is malformed: bad JSON, unknown or missing field, wrong type, non-hex, too big."""

    http_status = 400


class PayloadTooLargeError(MessageError):
    """A message or upload is over its size limit."""

    http_status = 413


class VerificationError(WmnodeError):
    """A cryptographic check failed: a signature, an inclusion or consistency proof, a checkpoint."""

    http_status = 400


class RejectedError(WmnodeError):
    """The log refused a well-formed message (backdated, key already published, ...)."""

    http_status = 409


class InfoError(RejectedError):
    """A claim's info is malformed, below the community's floors or over its caps."""


class NotFoundError(WmnodeError):
    """An entry, proof range or artifact does not exist (yet)."""

    http_status = 404


class UnavailableError(WmnodeError):
    """The community cannot commit right now: no leader, no quorum, or a commit timed out."""

    http_status = 503


class RateLimitedError(WmnodeError):
    """A client address or an identity is over its rate limit; `retry_after_s` says when to try again."""

    http_status = 429

    def __init__(self, message: str = "", retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class QuotaExceededError(WmnodeError):
    """The node's artifact store, or its area for artifacts no entry names yet, has no room."""

    http_status = 507


class NodeError(WmnodeError):
    """A node could not start or talk to its peers (port in use, data dir locked, ...)."""

    http_status = 500


class SchemeError(WmnodeError):
    """An unknown scheme or option, a bad option value, or a suspect the scheme cannot check."""

    http_status = 400


class ZooError(WmnodeError):
    """A model name, model card or weights file is unknown, malformed, oversize or does not match."""

    http_status = 400


class DataError(WmnodeError):
    """A data set is unknown, missing, malformed, too big, or asked for with bad options."""

    http_status = 400


def error_class(name: str) -> type[WmnodeError]:
    """The error class called `name`, as the nearest class of this module it derives from (for
    clients turning an API error back into the tree: a node's reply names the class, and must not
    make the client run another module's constructor: a subclass defined elsewhere, such as the
    monitor's ForkError, comes back as its nearest class here)."""
    pending: list[type[WmnodeError]] = [WmnodeError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return next(c for c in cls.__mro__ if c.__module__ == __name__)
        pending.extend(cls.__subclasses__())
    return WmnodeError
