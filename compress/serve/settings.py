"""The operator's settings: environment variables, each read when it is used (a test or an operator may change it
while the server runs) and each either a finite number in its bounds or one clear refusal; unset or empty, the
default. Every limit of the library and the app reads its variable here, so none falls back silently or fails with a
traceback where another refuses."""
import math
import os

from ..errors import CompressError


def number(name: str, default: float, whole: bool = False, least: float = 0.0):
    """os.environ[name] as a number above `least` (whole: an int, underscores allowed), else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = int(raw.replace("_", "")) if whole else float(raw)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > least):
        raise CompressError(f"{name} must be a {'whole ' if whole else ''}number above {least:g}, got {raw[:20]!r}")
    return v
