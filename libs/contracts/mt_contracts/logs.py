"""Log lines: the JSON shape shared by every service's stdout and each job's ``logs.jsonl``.

A line holds ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``event``, ``message``, the job id when there
is one, and the event's own fields. Every line a service logs passes ``redact`` first, whichever logger wrote
it (ours, ``uvicorn.error``, ``uvicorn.access``, libraries'): no API key or password reaches a log.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import msgspec

_encoder = msgspec.json.Encoder()

# Attributes every LogRecord has; anything else passed through ``extra=`` is an event field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# "event" becomes the line's event; uvicorn's "color_message" repeats the message with terminal colours.
_DROPPED = frozenset({"event", "color_message"})


# The value of an access_token query parameter (RFC 6750 section 2.3: browsers' live streams), wherever a URL
# or a request line shows it; and the password of a URL's authority (redis://:<password>@host, s3://...).
_ACCESS_TOKEN = re.compile(r"(?<=[?&]access_token=)[^&#\s\"'\\]+")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s\"'\\]*):[^@/\s\"'\\]+@")
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with every ``access_token`` query value and every password in a URL replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", _ACCESS_TOKEN.sub(REDACTED, text))


def timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with millisecond precision, e.g. ``2026-11-29T13:17:26.123Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def log_line(level: str, event: str, message: str, fields: dict[str, object]) -> bytes:
    """One JSON log line (with trailing newline). ``fields`` must be JSON-encodable by msgspec."""
    payload: dict[str, object] = {"ts": timestamp(), "level": level, "event": event, "message": message}
    payload.update(fields)
    return _encoder.encode(payload) + b"\n"


class JsonFormatter(logging.Formatter):
    """Formats a ``logging`` record as one JSON line; ``extra={"event": ..., ...}`` adds fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {"logger": record.name}
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in _DROPPED:
                if isinstance(value, str):
                    fields[key] = redact(value)
                elif isinstance(value, int | float | bool | None):
                    fields[key] = value
                else:
                    fields[key] = redact(repr(value))
        if record.exc_info:
            fields["exception"] = redact(self.formatException(record.exc_info))
        event = getattr(record, "event", record.name)
        # Redacted after the arguments are merged in: uvicorn passes the request line as an argument.
        line = log_line(record.levelname.lower(), str(event), redact(record.getMessage()), fields)
        return line.decode().rstrip("\n")


def configure_logging(level: str) -> None:
    """Send every log record to stdout as JSON at ``level`` (e.g. ``INFO``), secrets redacted (``redact``).
    Loggers that propagate to the root (uvicorn's with ``log_config=None``, every library's) share its
    one handler, so none writes around the redaction."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
