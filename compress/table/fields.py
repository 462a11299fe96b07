"""Field: one Recipe field as the technique table declares it (kind, range, default, help, control), and the
one parser / checker per kind that the Recipe, the CLI, the URL and the app's controls all use."""
import math
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import CompressError

KINDS = ("count", "counts", "fraction", "choice", "bool", "int", "float", "text")
MAX_COUNTS = 256  # entries of a per-block list (a link's 5,000 were shown whole on the page)
HEX = re.compile(r"[0-9a-f]{0,64}")
MIN_FRACTION = 1e-4  # a fraction's smallest value (a share kept: below it, the minimum width anyway)
INT = re.compile(r"[+-]?[0-9]+")  # a number as text is ASCII digits (int() also reads '1_0' and '３２')
FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str              # one of KINDS; count: 0 = all, else 1..the model's; counts: a count or one per block
    default: object
    help: str              # one line: the CLI's --help and the control's tooltip
    label: str = ""        # the control's label; "" = not a user control (e.g. the healing corpus hash)
    choices: tuple = ()    # choice: its values (steps that select a value add theirs); float: the values offered
    lo: float = 0.0        # fraction: the control's smallest value; int / float: the valid range
    hi: float = 1.0
    step: float = 0.05     # the control's step
    most: str = ""         # count(s): the model-card key holding the model's maximum ("layers", "heads")
    unit: str = ""         # count(s): what is counted, in words ("blocks", "heads per block")
    allowed: Callable | None = None  # count(s): bundle -> the counts this model can keep (None: 1 to its most)
    aliases: tuple = ()    # more CLI spellings besides --name-with-dashes
    off: Callable | None = None  # recipe -> why the control does nothing now (greyed out), or None
    fmt: Callable | None = None  # how the control shows a value
    widget: str = ""       # "select": a dropdown instead of radio buttons

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, v):
        """The value, normalized (int, float, tuple), or a CompressError naming the field and what it takes."""
        bad = CompressError(f"{self.name} must be {self.takes()}: {self.help}; got {_show(v)}")
        if self.kind in ("count", "int", "counts") and not isinstance(v, (list, tuple)):
            if not _num(v) or v != int(v) or not (v >= 0 if self.kind != "int" else self.lo <= v <= self.hi):
                raise bad
            return int(v)
        if self.kind == "counts":
            if not v or len(v) > MAX_COUNTS or not all(_num(h) and h == int(h) and h >= 1 for h in v):
                raise bad
            return tuple(int(h) for h in v)
        if self.kind == "fraction":
            if not _num(v) or not MIN_FRACTION <= v <= 1.0:  # (1e-320 read as 'FFN 9.99989e-321')
                raise bad
            return float(v)
        if self.kind == "float":
            if not _num(v) or not self.lo < v < self.hi:
                raise bad
            return float(v)
        if self.kind == "choice":
            if not any(v == c and type(v) is type(c) for c in self.choices):  # 2 is a choice, True and 2.0 are not
                raise CompressError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {_show(v)}")
            return v
        if self.kind == "bool":
            if not isinstance(v, bool):
                raise CompressError(f"{self.name} must be true or false, got {_show(v)}")
            return v
        if not isinstance(v, str) or not HEX.fullmatch(v):  # text: the one such field is a sha256 (heal_corpus);
            raise bad                                      # a link's markdown or megabytes never enter a recipe
        return v

    def takes(self) -> str:
        return {"count": "a whole number >= 0 (0 = all)", "counts": "a whole number >= 0 or a list of them, one per block",
                "fraction": f"a number from {MIN_FRACTION:g} to 1",
                "int": f"a whole number in [{self.lo:g}, {self.hi:g}]",
                "float": f"a number in ({self.lo:g}, {self.hi:g})",
                "text": "a sha256 in hex, or empty"}.get(self.kind, "")

    def parse(self, text: str):
        """A value from its text (URL query, CLI flag), checked."""
        text = str(text).strip()
        try:
            if self.kind == "counts":
                hs = [int(_ascii(x, INT)) for x in text.strip("[]() ").split(",")]
                return self.check(hs[0] if len(hs) == 1 else tuple(hs))
            if self.kind in ("count", "int"):
                return self.check(int(_ascii(text, INT)))
            if self.kind in ("fraction", "float"):
                return self.check(float(_ascii(text, FLOAT)))
        except (ValueError, OverflowError):
            raise CompressError(f"{self.name} must be {self.takes()}, got {_show(text)}") from None
        if self.kind == "choice":
            for c in self.choices:
                if str(c) == text:
                    return c
            return self.check(text)
        if self.kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            return self.check(text)
        return self.check(text)

    def text(self, v) -> str:
        """The value as parse() reads it back."""
        if isinstance(v, (list, tuple)):
            return ",".join(map(str, v))
        return str(v).lower() if isinstance(v, bool) else str(v)

    def probe(self):
        """A value that turns the field on, to ask whether the model or the other fields refuse it."""
        if self.kind in ("count", "counts", "int"):
            return 1
        if self.kind == "bool":
            return not self.default
        if self.kind == "fraction":
            return 0.5
        return next((c for c in self.choices if c != self.default), self.default)


def _num(x) -> bool:  # a finite number: JSON's NaN, Infinity and 1e309 are not (int() of them raises), nor an int
    if isinstance(x, int) and not isinstance(x, bool):  # of 400 digits (isfinite of it raised OverflowError)
        return abs(x) <= 2 ** 53
    return isinstance(x, float) and math.isfinite(x)


def _ascii(text: str, form: re.Pattern) -> str:
    """The text, if it is a plain number of this form; else a ValueError (parse() says what the field takes)."""
    if not form.fullmatch(text.strip()):
        raise ValueError(text)
    return text


def _show(v) -> str:
    """A value in an error message: its repr, cut short (a crafted URL can hold megabytes)."""
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
