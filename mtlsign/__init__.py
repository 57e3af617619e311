"""MTLSign's own pieces: key schedule (named PRG streams), π_key, the QR map, D_WM, appendix A.

The cWM head, Algorithm 1 and embedding (the regularisers of eq. 7-10) are still to come.
"""

from __future__ import annotations

from mtlsign.bound import chernoff_bound, m_for
from mtlsign.dwm import WatermarkSet, build_dwm
from mtlsign.pikey import KeySequence, key_sequence
from mtlsign.prg import Stream
from mtlsign.qr import qr_modules, render

__all__ = [
    "KeySequence",
    "Stream",
    "WatermarkSet",
    "build_dwm",
    "chernoff_bound",
    "key_sequence",
    "m_for",
    "qr_modules",
    "render",
]
