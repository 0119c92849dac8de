"""Human durations for the config: `90s`, `5m`, `3h`, `7d`, `2w`, `1y`, and combinations like `1h30m`.

A year is 365 days: retention is counted in elapsed time, not calendar years, so "1y" never
depends on leap days or the timezone.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Largest unit first: format_duration emits them in this order and parse_duration requires it,
# so "30m1h" (almost always a typo) is refused rather than silently summed.
_UNITS: tuple[tuple[str, int], ...] = (
    ("y", 365 * 86400),
    ("w", 7 * 86400),
    ("d", 86400),
    ("h", 3600),
    ("m", 60),
    ("s", 1),
)
_UNIT_SECONDS = dict(_UNITS)
_UNIT_ORDER = {unit: i for i, (unit, _) in enumerate(_UNITS)}
_PART_RE = re.compile(r"(\d{1,12})(?:\.(\d{1,6}))?([a-zA-Z]+)")
_EXAMPLES = "e.g. 90s, 5m, 3h, 7d, 2w, 1y or 1h30m"


def parse_duration(s: str) -> timedelta:
    """Parse a compact duration. Raises ValueError with a message that names the problem."""
    if not isinstance(s, str):
        raise ValueError(f"expected a duration string ({_EXAMPLES}), got {type(s).__name__}")
    text = s.strip()
    if not text:
        raise ValueError(f"empty duration: expected {_EXAMPLES}")
    pos = 0
    total = timedelta()
    last_order = -1
    while pos < len(text):
        if text[pos].isspace():  # "1h 30m" reads naturally; spacing carries no meaning
            pos += 1
            continue
        m = _PART_RE.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {s!r}: expected {_EXAMPLES}")
        number, fraction, unit = m.group(1), m.group(2), m.group(3)
        if unit not in _UNIT_SECONDS:
            raise ValueError(
                f"invalid duration {s!r}: unknown unit {unit!r} (use s, m, h, d, w or y: {_EXAMPLES})"
            )
        order = _UNIT_ORDER[unit]
        if order <= last_order:
            raise ValueError(f"invalid duration {s!r}: give each unit once, largest first (like 1h30m)")
        if fraction is not None and unit != "s":
            raise ValueError(f"invalid duration {s!r}: only seconds may have a fraction (like 1.5s)")
        last_order = order
        micros = int(fraction.ljust(6, "0")) if fraction is not None else 0
        try:
            total += timedelta(seconds=int(number) * _UNIT_SECONDS[unit], microseconds=micros)
        except OverflowError:
            raise ValueError(f"duration {s!r} is too large") from None
        pos = m.end()
    return total


def format_duration(td: timedelta) -> str:
    """The compact inverse of parse_duration: parse_duration(format_duration(td)) == td."""
    if td < timedelta(0):
        raise ValueError(f"negative duration {td!r} cannot be formatted")
    seconds = td.days * 86400 + td.seconds
    micros = td.microseconds
    parts: list[str] = []
    for unit, size in _UNITS:
        if unit == "s":
            break
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
