"""Structured logs (`wmnode start --log-json`): every record one JSON object on one line.

Fields: `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, every `extra=` field the
call passed, and `exc` with the traceback when there is one. Secrets never land in a line: an extra
field whose name says secret, password, passphrase, token, seed or private key is replaced, and so
is every occurrence of the values handed to `JsonFormatter` (the community secret, the identity
seed) anywhere in the line, message and traceback included.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"secret|passw|passphrase|token|seed|private|credential", re.IGNORECASE)
#: Attributes every LogRecord has; whatever else a record carries came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format records as single-line JSON objects, with the given secret values blotted out."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in out:
                out[name] = REDACTED if _SECRET_NAME.search(name) else _plain(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return self._scrub(json.dumps(out, ensure_ascii=False, default=str))

    def _scrub(self, line: str) -> str:
        for secret in self._secrets:
            for form in {secret, json.dumps(secret, ensure_ascii=False)[1:-1]}:
                line = line.replace(form, REDACTED)
        return line


def _plain(value: Any) -> Any:
    """A JSON-friendly value: numbers, strings, booleans, None, and lists or dicts of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): REDACTED if _SECRET_NAME.search(str(k)) else _plain(v) for k, v in value.items()}
    return str(value)


def use_json_logs(secrets: Iterable[str | None] = ()) -> None:
    """Make every handler of the root logger write JSON lines (adding one on stderr if it has none)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter = JsonFormatter(secrets)
    for handler in root.handlers:
        handler.setFormatter(formatter)
