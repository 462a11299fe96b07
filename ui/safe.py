"""What stands between a visitor's input and the page: text from a link shown as plain text, names without server
paths, upload file names the disk takes, and the boundary where an unexpected exception becomes one line and a log
entry (never a traceback, never a page broken on every rerun)."""
import functools
import html
import logging
import re
import unicodedata
from pathlib import PurePath

import streamlit as st

import compress as C

LOG = logging.getLogger("compress.app")
MAX_SHOWN = 4000  # characters of a text shown (plain): a message, or a chart of many traces in words
MAX_NAME = 60  # characters of an upload's file name kept: at most 240 bytes (a name of 255+ bytes raised writing it)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_AUTOLINK = re.compile(r"(:(?=//)|(?i:www)(?=\.)|@)")  # where GFM's autolinks start: scheme://, www., a@b
_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation: CommonMark lets each be backslash-escaped


def plain(text) -> str:
    """Text to show inside markdown (st.warning, st.caption...) as it is: no link, image, emphasis, colour directive
    or HTML of a crafted link takes effect; line breaks become spaces (no block of markdown can start); a bare address
    (https://, www., a@b) is not turned into a link (Streamlit's markdown links them even escaped: a word joiner,
    invisible, breaks each); control and format characters (a right-to-left override) are dropped and the text is cut
    to MAX_SHOWN characters (a zip entry's name of 20,000 quoted whole in a message)."""
    text = "".join(c for c in str(text)[:4 * MAX_SHOWN] if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf"))
    text = " ".join(text.split())
    text = text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "\u2026"
    return _MARKDOWN.sub(r"\\\1", _AUTOLINK.sub("\\1\u2060", text))


def labels(texts) -> list[str]:
    """Texts of an upload (its tokens) as a chart's labels (ticks, hover data): plotly renders a subset of HTML there
    (a link, a style), so their <, > and & are escaped (the library cuts them to length: compress.learn.shown)."""
    return [html.escape(str(t), quote=False) for t in texts]


def csv_bytes(table) -> bytes:
    """A DataFrame as CSV bytes for a download, every text cell (and column name) that a spreadsheet would read as a
    formula (starting with = + - @, a tab or a carriage return) kept as text by a leading apostrophe (OWASP's advice):
    its cells may be an upload's tokens or a card's keys."""
    def cell(v):
        return "'" + v if isinstance(v, str) and v.startswith(_FORMULA) else v
    return table.rename(columns=cell).map(cell).to_csv(index=False).encode()


def file_name(raw: str) -> str:
    """An upload's file name fit for a temp folder and for the page: its base name in letters, digits and . _ - and
    spaces (no NUL, no markdown), at most MAX_NAME characters with its extension kept; the disk refused 255+ bytes."""
    name = re.sub(r"[^\w. -]+", "_", PurePath(str(raw).replace("\\", "/")).name).strip(" .")
    name = re.sub(r"_(?![^\W_])|(?<![^\W_])_", "-", name)  # "_" only inside a word: "__pwn__" showed as bold
    name = re.sub(r"^(\d+)\.(?= )|(?i:(www))\.", r"\1\2-", name)  # no "www." link, no "1. " list item in markdown
    name = name if name.strip("_-") else "upload.zip"  # (nothing of the name was left)
    stem, dot, ext = name.rpartition(".")
    if len(name) > MAX_NAME:
        name = stem[:MAX_NAME - len(ext) - 1] + dot + ext if dot and len(ext) <= 10 else name[:MAX_NAME]
    return name


def report(where: str, e: BaseException) -> None:
    """An exception the page did not expect: one line on the page, the traceback in the server's log only."""
    LOG.error("unexpected error in %s", where, exc_info=e)
    st.error(f"Something went wrong in {where} ({type(e).__name__}); it is logged for the operator. Change the input "
             "or reload the page.")


def guard(fn, where: str):
    """Run fn() at a page boundary: a CompressError is the library's one line, anything else is report()ed.
    Streamlit's own stop / rerun / page switch are BaseExceptions and pass through."""
    try:
        return fn()
    except C.CompressError as e:
        st.error(plain(e))
    except Exception as e:  # noqa: BLE001 - the boundary: whatever it was, the page stays usable
        report(where, e)


def guarded(where: str):
    """guard() as a decorator: fragments and widget callbacks run outside the page's own run, so each needs it."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kw):
            return guard(lambda: fn(*args, **kw), where)
        return run
    return wrap
