"""Times as users type them: epoch seconds, ISO 8601, or relative (`-10m`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from edgeopt.config.durations import parse_duration


def parse_time(value: str | int | float, now: float) -> float:
    """Epoch seconds for `value`; relative values count back from `now`.

    Raises:
        ValueError: the value is none of the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid time {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"invalid time {value!r}")
        return float(value)
    text = value.strip()
    if text.startswith(("-", "+")):
        # A signed value is relative to now: `-10m`, `-90` (seconds), `+1h`.
        return now + parse_duration(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {value!r}: use epoch seconds, ISO 8601 or a relative value like -10m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
