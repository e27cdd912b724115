"""Human durations for configuration: `7d`, `1h`, `90m`, `1h30m`, `45s`, or a plain number of seconds.

The seeds write eviction thresholds as `"7d"` and intervals as `"1h"`; this module parses them into
`timedelta` and writes them back in the shortest exact form so that generated files round-trip.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)\s*([wdhms])")
DURATION_PATTERN = r"^\s*(\d+\s*[wdhms]\s*)+$|^\s*\d+\s*$"
_WHOLE = re.compile(DURATION_PATTERN)


def parse_duration(value: Any) -> timedelta:
    """Turn `7d`, `1h30m`, `3600` (seconds) or a `timedelta` into a `timedelta`; refuse anything else."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("expected a duration such as '7d', '1h', '30m' or a number of seconds, got a boolean")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if len(value) > 64 or not _WHOLE.match(text):
            raise ValueError(
                f"invalid duration {value!r}: use a number with a unit (w, d, h, m, s) such as '7d', "
                "'1h30m' or '45s', or a plain number of seconds"
            )
        if text.isdigit():
            result = timedelta(seconds=int(text))
        else:
            result = timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)))
    else:
        raise ValueError(f"expected a duration string or seconds, got {type(value).__name__}")
    if result < timedelta(0):
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return result


def format_duration(value: timedelta) -> str:
    """Write a duration in its shortest exact unit form: 604800 s -> `7d`, 5400 s -> `1h30m`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json-unless-none"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 64}),
]
"""A `timedelta` that reads and writes the seeds' duration strings."""
