"""The operator's settings: environment variables, each read when it is used (a test or an operator may change it
while the server runs) and each either a finite number in its bounds or one clear refusal; unset or empty, the
default. Every limit of the library and the app reads its variable here, so none falls back silently or fails with a
traceback where another refuses."""
import math
import os

from ..errors import CompressError

MAX_MINUTES = 1e6  # a time limit in minutes (about two years: a timer of more overflows the platform's time_t)


def number(name: str, default: float, whole: bool = False, least: float = 0.0, most: float = 1e15):
    """os.environ[name] as a number above `least` and at most `most` (whole: an int, underscores allowed), else
    `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = int(raw.replace("_", "")) if whole else float(raw)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and least < v <= most):
        raise CompressError(f"{name} must be a {'whole ' if whole else ''}number above {least:g} and at most "
                            f"{most:g}, got {raw[:20]!r}")
    return v
