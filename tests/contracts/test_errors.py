"""A node's error reply names a class: the client rebuilds only classes of the error tree's module."""

from __future__ import annotations

from contracts.errors import InfoError, RateLimitedError, RejectedError, VerificationError, WmnodeError, error_class
from registry.client.monitor import ForkError


def test_a_reply_can_name_only_classes_of_registry_errors() -> None:
    assert error_class("RejectedError") is RejectedError
    assert error_class("RateLimitedError") is RateLimitedError
    assert error_class("ForkError") is VerificationError and issubclass(ForkError, VerificationError)
    assert error_class("InfoError") is InfoError and issubclass(InfoError, RejectedError)  # the tree holds it
    assert error_class("NoSuchError") is WmnodeError
