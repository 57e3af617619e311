"""The model zoo: registered architectures, Hub and timm directories, passport layers, a prediction server."""

from __future__ import annotations

from schemes.models import architectures as _architectures  # noqa: F401  # registers the built-in models
