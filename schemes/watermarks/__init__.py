"""The watermarking schemes behind one interface (`base.Scheme`), one module each, and their control keys.

A scheme's module holds its Config, embed and registration; where it is long, its parts live in
private modules named after it (`_blind_verification`, `_passport_verification`,
`_function_coupled_triggers`, `_function_coupled_verification`), which it re-exports. Each scheme's
info has one schema, its `contracts.infos.Info`, which its verify reads through `base.read_info`.

Importing any of these modules imports this package first, which registers every scheme: a
`get_scheme(name)` from `base` always sees all five.
"""

from __future__ import annotations

from schemes.watermarks import blind as _blind  # noqa: F401  # each import registers its scheme
from schemes.watermarks import function_coupled as _function_coupled  # noqa: F401
from schemes.watermarks import mtlsign as _mtlsign  # noqa: F401
from schemes.watermarks import new_label as _new_label  # noqa: F401
from schemes.watermarks import passport as _passport  # noqa: F401
