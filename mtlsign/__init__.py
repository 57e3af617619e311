"""MTLSign's own pieces (key schedule, PRG, QR mapping, D_WM, the cWM head, Algorithm 1): not yet built."""

from __future__ import annotations

__all__: list[str] = []
