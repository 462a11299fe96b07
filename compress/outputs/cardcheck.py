"""A compressed zip's card.json as it is read back: the uploader's claims, shown beside what this machine measures and
drawn on the Learn page's healing tab, so each field the app reads is checked here once and dropped when it is not
what the app wrote: numbers finite, not booleans and within bounds (an integer of 400 digits broke float formatting),
texts short, the healing record a bounded list of (step, dev) points. The rest stays for the card's JSON view, but
for fields nested deeper than MAX_DEPTH (900 levels: the page's JSON view and a copy of the bundle raised
RecursionError)."""
from ..models.tokcheck import json_depth

MAX_NUMBER = 1e15   # bytes, params, quality values, seconds: real ones are far below
MAX_TEXT = 200      # characters of a text field the app shows
MAX_HISTORY = 1000  # healing points (a run checks its dev split about ten times)
MAX_DEPTH = 10      # levels of a field the app does not read, its values the last (what it writes: 4)
METRICS = ("fidelity", "next_token_kl")  # healdev.HealResult.metric


def number(v, lo: float = -MAX_NUMBER, hi: float = MAX_NUMBER) -> bool:
    """A JSON number the page can format: not a boolean, not NaN, within [lo, hi] (compared before any conversion)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi


def _text(v) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT


def _point(p) -> bool:
    return isinstance(p, dict) and isinstance(p.get("step"), int) and number(p["step"], 0, MAX_NUMBER) and \
        number(p.get("dev"))


def _heal(h) -> dict | None:
    if not isinstance(h, dict) or h.get("metric") not in METRICS or not isinstance(h.get("history"), list):
        return None
    history = [{"step": p["step"], "dev": p["dev"]} for p in h["history"][:MAX_HISTORY] if _point(p)]
    if not history:
        return None
    out = {k: v for k, v in h.items() if (number(v) or _text(v) or isinstance(v, bool)) and k != "history"}
    return {**out, "metric": h["metric"], "history": history}


def checked(card: dict) -> dict:
    """The card with the fields the app reads kept only when valid, the others when not too deep (module docstring)."""
    out = {k: v for k, v in card.items()
           if k not in ("size_bytes", "original_size_bytes", "params", "quality", "heal") and json_depth(v) < MAX_DEPTH}
    for k in ("size_bytes", "original_size_bytes", "params"):
        if isinstance(card.get(k), int) and number(card[k], 0):
            out[k] = card[k]
    if isinstance(card.get("quality"), dict):
        out["quality"] = {k: v for k, v in list(card["quality"].items())[:50] if _text(k) and number(v)}
    if (h := _heal(card.get("heal"))) is not None:
        out["heal"] = h
    return out
