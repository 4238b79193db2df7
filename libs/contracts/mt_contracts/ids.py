"""Job id formats: a kind prefix and a ULID (26 Crockford base32 characters, millisecond time + 80 random
bits), so ids sort by creation time and never collide. Generation lives in the API; this module only
spells the patterns every layer validates against."""

from __future__ import annotations

import re

_ULID = "[0-9A-HJKMNP-TV-Z]{26}"
TOKENIZER_ID_PATTERN = f"^tok_{_ULID}$"
RUN_ID_PATTERN = f"^run_{_ULID}$"
EVAL_ID_PATTERN = f"^eval_{_ULID}$"

_TOKENIZER_ID = re.compile(TOKENIZER_ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)
_EVAL_ID = re.compile(EVAL_ID_PATTERN)


def is_tokenizer_id(value: str) -> bool:
    """True when ``value`` is a well-formed tokenizer id (``tok_`` + ULID)."""
    return _TOKENIZER_ID.fullmatch(value) is not None


def is_run_id(value: str) -> bool:
    """True when ``value`` is a well-formed run id (``run_`` + ULID)."""
    return _RUN_ID.fullmatch(value) is not None


def is_eval_id(value: str) -> bool:
    """True when ``value`` is a well-formed evaluation id (``eval_`` + ULID)."""
    return _EVAL_ID.fullmatch(value) is not None
