"""The watermarking schemes behind one interface, the model zoo, data sets and attacks: not yet built."""

from __future__ import annotations

__all__: list[str] = []
